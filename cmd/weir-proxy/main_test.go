package main

import (
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"xds address required", []string{"--node-id", "a"}, "--xds-address is required"},
		{"unknown flag", []string{"--xds-address", "127.0.0.1:1", "--nope"}, "flag provided but not defined"},
		{"admin address must bind", []string{"--xds-address", "127.0.0.1:1", "--admin-address", "256.0.0.1:1"}, "failed to listen on admin address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}
