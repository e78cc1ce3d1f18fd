package xdsclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// The ADS stream is spoken as gRPC over h2c (HTTP/2 prior knowledge) with
// net/http's transport, and DiscoveryRequest/DiscoveryResponse are encoded
// with protowire. Importing grpc-go (and go-control-plane's discovery
// package, whose generated service stubs import it) would link
// golang.org/x/net/trace and with it text/template, whose reflective method
// calls keep every exported method of every type in the binary: 33.5 MB
// instead of ~20 MB, and a larger resident set.

const adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

// maxMessage bounds one DiscoveryResponse.
const maxMessage = 64 << 20

// codeInvalidArgument is google.rpc.Code INVALID_ARGUMENT, the code of a
// NACK's error_detail.
const codeInvalidArgument = 3

func newTransport() *http.Transport {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols:   &protos,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// A control plane that went away without a FIN is noticed by
		// pings on a silent connection.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
}

// discoveryRequest is envoy.service.discovery.v3.DiscoveryRequest.
type discoveryRequest struct {
	versionInfo   string
	node          []byte // marshalled config.core.v3.Node
	resourceNames []string
	typeURL       string
	responseNonce string
	errorDetail   string // non-empty: NACK, google.rpc.Status{code: INVALID_ARGUMENT, message}
}

func (r *discoveryRequest) marshal() []byte {
	b := make([]byte, 5, 5+64+len(r.node))
	b = appendString(b, 1, r.versionInfo)
	if len(r.node) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, r.node)
	}
	for _, n := range r.resourceNames {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, n)
	}
	b = appendString(b, 4, r.typeURL)
	b = appendString(b, 5, r.responseNonce)
	if r.errorDetail != "" {
		var st []byte
		st = protowire.AppendTag(st, 1, protowire.VarintType)
		st = protowire.AppendVarint(st, codeInvalidArgument)
		st = appendString(st, 2, r.errorDetail)
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, st)
	}
	// gRPC message prefix: not compressed, big-endian length.
	b[0] = 0
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// discoveryResponse is the part of envoy.service.discovery.v3.DiscoveryResponse
// the client reads.
type discoveryResponse struct {
	versionInfo string
	resources   []*anypb.Any
	typeURL     string
	nonce       string
}

func (r *discoveryResponse) unmarshal(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2 || num == 4 || num == 5) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				r.versionInfo = string(v)
			case 2:
				a, err := unmarshalAny(v)
				if err != nil {
					return fmt.Errorf("resource %d: %w", len(r.resources), err)
				}
				r.resources = append(r.resources, a)
			case 4:
				r.typeURL = string(v)
			case 5:
				r.nonce = string(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

func unmarshalAny(b []byte) (*anypb.Any, error) {
	a := &anypb.Any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			if num == 1 {
				a.TypeUrl = string(v)
			} else {
				a.Value = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return a, nil
}

// adsStream is one StreamAggregatedResources call: requests are written to
// the request body as it streams, responses read from the response body.
type adsStream struct {
	pw   *io.PipeWriter
	done chan struct{} // closed once the response headers (or an error) are in
	resp *http.Response
	err  error
	br   *bufio.Reader
	once sync.Once
}

func openStream(ctx context.Context, tr http.RoundTripper, address string) (*adsStream, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+address+adsPath, pr)
	if err != nil {
		return nil, err
	}
	req.Header = http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
		"User-Agent":   {"weir-proxy"},
	}
	req.ContentLength = -1
	s := &adsStream{pw: pw, done: make(chan struct{})}
	go func() {
		resp, err := tr.RoundTrip(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("control plane answered HTTP %d", resp.StatusCode)
		}
		if err != nil {
			pr.CloseWithError(err) // unblocks a pending Send
		}
		s.resp, s.err = resp, err
		close(s.done)
	}()
	// net/http does not always end a pending read of a streaming response
	// body when the request's context ends; closing the body does.
	context.AfterFunc(ctx, s.Close)
	return s, nil
}

// Send writes one request (a whole gRPC message in one write).
func (s *adsStream) Send(r *discoveryRequest) error {
	_, err := s.pw.Write(r.marshal())
	return err
}

// Recv reads the next response; at the end of the stream it returns the
// gRPC status the server ended it with.
func (s *adsStream) Recv() (*discoveryResponse, error) {
	<-s.done
	if s.err != nil {
		return nil, s.err
	}
	if s.br == nil {
		if err := grpcStatus(s.resp.Header); err != nil { // trailers-only answer
			return nil, err
		}
		s.br = bufio.NewReaderSize(s.resp.Body, 32<<10)
	}
	var hdr [5]byte
	if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			if serr := grpcStatus(s.resp.Trailer); serr != nil {
				return nil, serr
			}
			return nil, errors.New("stream ended by the control plane")
		}
		return nil, err
	}
	if hdr[0] != 0 {
		return nil, errors.New("compressed gRPC message (none was offered)")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessage {
		return nil, fmt.Errorf("DiscoveryResponse of %d bytes exceeds %d", n, maxMessage)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(s.br, msg); err != nil {
		return nil, err
	}
	resp := &discoveryResponse{}
	if err := resp.unmarshal(msg); err != nil {
		return nil, fmt.Errorf("failed to decode DiscoveryResponse: %w", err)
	}
	return resp, nil
}

// Close ends the request body and releases the response.
func (s *adsStream) Close() {
	s.once.Do(func() {
		s.pw.Close()
		go func() {
			<-s.done
			if s.resp != nil {
				s.resp.Body.Close()
			}
		}()
	})
}

func grpcStatus(h http.Header) error {
	code := h.Get("Grpc-Status")
	if code == "" || code == "0" {
		return nil
	}
	msg := h.Get("Grpc-Message")
	if m, err := decodeGRPCMessage(msg); err == nil {
		msg = m
	}
	return fmt.Errorf("rpc error: grpc-status %s: %s", code, msg)
}

// decodeGRPCMessage undoes grpc-message's percent-encoding.
func decodeGRPCMessage(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &v); err != nil {
				return "", err
			}
			b.WriteByte(v)
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}
