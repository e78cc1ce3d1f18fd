package app

import (
	"strings"
	"testing"
	"time"
)

func TestSettingsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Settings
		wantErr []string
	}{
		{name: "defaults", env: nil,
			want: Settings{Version: "v0", Addr: "0.0.0.0:8080"}},
		{name: "everything", env: map[string]string{
			"VERSION": "v2", "ERROR_RATE": "0.25", "LATENCY": "200ms", "PORT": "9898",
			"POD_IP": "127.0.1.7", "POD_NAME": "podinfo-1", "POD_NAMESPACE": "test"},
			want: Settings{Version: "v2", ErrorRate: 0.25, Latency: 200 * time.Millisecond,
				Addr: "127.0.1.7:9898", Pod: "podinfo-1", Namespace: "test"}},
		{name: "BIND_IP wins over POD_IP", env: map[string]string{"BIND_IP": "127.0.0.1", "POD_IP": "127.0.1.7"},
			want: Settings{Version: "v0", Addr: "127.0.0.1:8080"}},
		{name: "IPv6", env: map[string]string{"BIND_IP": "::1", "PORT": "0"},
			want: Settings{Version: "v0", Addr: "[::1]:0"}},
		{name: "rate bounds", env: map[string]string{"ERROR_RATE": "1"},
			want: Settings{Version: "v0", ErrorRate: 1, Addr: "0.0.0.0:8080"}},
		{name: "bad rate", env: map[string]string{"ERROR_RATE": "half"}, wantErr: []string{`ERROR_RATE="half"`}},
		{name: "rate above 1", env: map[string]string{"ERROR_RATE": "1.5"}, wantErr: []string{"between 0 and 1"}},
		{name: "rate NaN", env: map[string]string{"ERROR_RATE": "NaN"}, wantErr: []string{"between 0 and 1"}},
		{name: "bad latency", env: map[string]string{"LATENCY": "200"}, wantErr: []string{`LATENCY="200"`}},
		{name: "negative latency", env: map[string]string{"LATENCY": "-5s"}, wantErr: []string{"between 0 and"}},
		{name: "bad port", env: map[string]string{"PORT": "http"}, wantErr: []string{`PORT="http"`}},
		{name: "port too big", env: map[string]string{"PORT": "70000"}, wantErr: []string{`PORT="70000"`}},
		{name: "bad pod IP", env: map[string]string{"POD_IP": "node-1"}, wantErr: []string{`POD_IP="node-1"`}},
		{name: "all errors at once", env: map[string]string{"ERROR_RATE": "x", "LATENCY": "y", "BIND_IP": "z"},
			wantErr: []string{"ERROR_RATE", "LATENCY", "BIND_IP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SettingsFromEnv(func(k string) string { return tt.env[k] })
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
