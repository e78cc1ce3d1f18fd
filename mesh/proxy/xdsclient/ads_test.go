package xdsclient

import (
	"encoding/binary"
	"testing"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The hand-written wire code must agree with the generated messages.
func TestWireMatchesGeneratedMessages(t *testing.T) {
	node, _ := proto.Marshal(&envoy_config_core_v3.Node{Id: "n1", Cluster: "c"})
	r := &discoveryRequest{versionInfo: "3", node: node, resourceNames: []string{"a", "b"}, typeURL: "type.googleapis.com/x", responseNonce: "7", errorDetail: "bad weight"}
	b := r.marshal()
	if b[0] != 0 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 {
		t.Fatalf("bad gRPC prefix % x", b[:5])
	}
	var got envoy_service_discovery_v3.DiscoveryRequest
	if err := proto.Unmarshal(b[5:], &got); err != nil {
		t.Fatal(err)
	}
	if got.VersionInfo != "3" || got.GetNode().GetId() != "n1" || got.GetNode().GetCluster() != "c" || len(got.ResourceNames) != 2 || got.ResourceNames[1] != "b" ||
		got.TypeUrl != r.typeURL || got.ResponseNonce != "7" || got.GetErrorDetail().GetCode() != 3 || got.GetErrorDetail().GetMessage() != "bad weight" {
		t.Errorf("decoded %v", &got)
	}
	ack := (&discoveryRequest{typeURL: "t"}).marshal()
	var gotAck envoy_service_discovery_v3.DiscoveryRequest
	if err := proto.Unmarshal(ack[5:], &gotAck); err != nil || gotAck.ErrorDetail != nil || gotAck.TypeUrl != "t" {
		t.Errorf("ACK decoded %v, %v", &gotAck, err)
	}

	a1, _ := anypb.New(wrapperspb.String("one"))
	a2, _ := anypb.New(wrapperspb.UInt32(2))
	in := &envoy_service_discovery_v3.DiscoveryResponse{VersionInfo: "9", Resources: []*anypb.Any{a1, a2}, Canary: true, TypeUrl: "tu", Nonce: "n", ControlPlane: &envoy_config_core_v3.ControlPlane{Identifier: "cp"}}
	wire, _ := proto.Marshal(in)
	var out discoveryResponse
	if err := out.unmarshal(wire); err != nil {
		t.Fatal(err)
	}
	if out.versionInfo != "9" || out.typeURL != "tu" || out.nonce != "n" || len(out.resources) != 2 || !proto.Equal(out.resources[0], a1) || !proto.Equal(out.resources[1], a2) {
		t.Errorf("decoded %+v", out)
	}
	if err := out.unmarshal([]byte{0x12, 0x05, 0x0a}); err == nil {
		t.Error("truncated response decoded without error")
	}
}
