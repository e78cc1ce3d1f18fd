package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// premarshal returns a resource that marshals to the same wire bytes as r
// but costs a copy instead of an encoding.
//
// go-control-plane's snapshot cache encodes every resource again for every
// response it sends, which is most of the controller's CPU when a thousand
// sidecars get a new route version. The returned message is an empty
// message of r's type carrying only r's name field (the cache keys
// resources by it) with everything else, encoded once, as unknown fields;
// protobuf writes unknown fields out verbatim, and a decoder sees r. Only
// the snapshot handed to the cache holds these; everything weir inspects
// (validation, hashing, /debug/xds) uses the real messages.
func premarshal(r types.Resource) (types.Resource, error) {
	m := r.ProtoReflect()
	fields := m.Descriptor().Fields()
	nameField := fields.ByName("name")
	if nameField == nil {
		nameField = fields.ByName("cluster_name")
	}
	if nameField == nil || nameField.Kind() != protoreflect.StringKind {
		return nil, fmt.Errorf("%s has no name field", m.Descriptor().FullName())
	}
	body := proto.Clone(r)
	body.ProtoReflect().Clear(nameField)
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s %q: %w", m.Descriptor().Name(), m.Get(nameField).String(), err)
	}
	shell := m.New()
	shell.Set(nameField, m.Get(nameField))
	shell.SetUnknown(raw)
	return shell.Interface().(types.Resource), nil
}
