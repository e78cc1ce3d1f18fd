package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTemplateInBinary guards weir-proxy's size and resident set: with the
// build tag the Makefile uses, text/template (pulled in by grpc-go's
// x/net/trace) must not be linked, because its reflective method calls keep
// every exported method of every Envoy proto in the binary.
func TestNoTemplateInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "grpcnotrace", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "text/template" || pkg == "golang.org/x/net/trace" {
			t.Errorf("weir-proxy links %s; keep it out (build with -tags grpcnotrace)", pkg)
		}
	}
}
