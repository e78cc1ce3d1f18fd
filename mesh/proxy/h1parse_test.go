package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
)

func TestParseRequestHead(t *testing.T) {
	ok := "GET /a/b?q=%20x HTTP/1.1\r\nHost: podinfo:9898\r\nX-A:  one \r\nx-a: two\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\nabc"
	var h reqHead
	if got := parseRequestHead([]byte(ok), &h); got != parseOK {
		t.Fatalf("parse = %v, want parseOK", got)
	}
	if string(h.method) != "GET" || string(h.target) != "/a/b?q=%20x" || string(h.target[:h.pathEnd]) != "/a/b" ||
		string(h.host) != "podinfo:9898" || h.contentLength != 3 || !h.connClose || h.size != len(ok)-3 {
		t.Errorf("parsed %+v", h)
	}
	if v, found := (fastRequest{&h}).header("x-a"); !found || v != "one,two" {
		t.Errorf("x-a = %q, %v; want the values joined with a comma", v, found)
	}
	for i := range len(ok) - 3 {
		if got := parseRequestHead([]byte(ok[:i]), &h); got != parseIncomplete {
			t.Fatalf("%d bytes: %v, want parseIncomplete", i, got)
		}
	}

	// Everything the loop leaves to the general path.
	elsewhere := map[string]string{
		"HTTP/1.0":           "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"no Host":            "GET / HTTP/1.1\r\n\r\n",
		"two Hosts":          "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"absolute-form":      "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"asterisk-form":      "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"escaped path":       "GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n",
		"fragment":           "GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n",
		"obs-fold":           "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"space before colon": "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"bare LF":            "GET / HTTP/1.1\nHost: a\n\n\r\n\r\n",
		"chunked":            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"two lengths":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"signed length":      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
		"expect":             "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"upgrade":            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
		"connection names":   "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-hop\r\n\r\n",
		"control in value":   "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
		"h2 preface":         "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"huge head":          "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", maxFastHead),
	}
	for name, req := range elsewhere {
		if got := parseRequestHead([]byte(req), &h); got != parseElsewhere {
			t.Errorf("%s: %v, want parseElsewhere", name, got)
		}
	}
}

func TestParseResponseHead(t *testing.T) {
	var h respHead
	res, err := parseResponseHead([]byte("HTTP/1.0 200 OK\nContent-Length: 5\nConnection: keep-alive\nDate: x\n\nhello"), &h)
	if res != parseOK || err != nil || h.status != 200 || h.minor != 0 || h.contentLength != 5 || !h.keepAlive || !h.hasDate {
		t.Errorf("bare-LF HTTP/1.0 head: %v %v %+v", res, err, h)
	}
	res, err = parseResponseHead([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), &h)
	if res != parseOK || err != nil || !h.chunked || h.contentLength != -1 {
		t.Errorf("chunked wins over a length: %+v, %v", h, err)
	}
	for name, head := range map[string]string{
		"conflicting lengths": "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"gzip coding":         "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/2 status":       "HTTP/2.0 200 OK\r\n\r\n",
		"short code":          "HTTP/1.1 20 OK\r\n\r\n",
		"header junk":         "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
	} {
		if _, err := parseResponseHead([]byte(head), &h); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// chunked is a body as net/http's writer frames it, with an extension and
// trailers added.
func chunked(t testing.TB, parts ...string) []byte {
	var b bytes.Buffer
	w := httputil.NewChunkedWriter(&b)
	for _, p := range parts {
		io.WriteString(w, p)
	}
	w.Close()
	out := bytes.Replace(b.Bytes(), []byte("\r\n"), []byte(";ext=1\r\n"), 1)
	return append(out, "X-Sum: 1\r\nX-Other: 2\r\n\r\n"...)
}

func TestChunkScannerFindsTheEndAcrossAnySplit(t *testing.T) {
	body := chunked(t, "hello", strings.Repeat("x", 70000), "!")
	next := []byte("HTTP/1.1 200 OK\r\n") // the next response on the connection
	stream := append(append([]byte(nil), body...), next...)
	for split := 1; split < len(body); split += 997 {
		var s chunkScanner
		n1, done1, err1 := s.scan(stream[:split])
		n2, done2, err2 := s.scan(stream[split:])
		if err1 != nil || err2 != nil || done1 || !done2 || n1+n2 != len(body) {
			t.Fatalf("split at %d: (%d %v %v) (%d %v %v), want the end at %d", split, n1, done1, err1, n2, done2, err2, len(body))
		}
	}
	var s chunkScanner
	for i := range body {
		n, done, err := s.scan(body[i : i+1])
		if err != nil || n != 1 || done != (i == len(body)-1) {
			t.Fatalf("byte %d: %d %v %v", i, n, done, err)
		}
	}
	for _, bad := range []string{"x\r\n", "5\r\nhelloXY", "\r\n", "1234567890abc\r\n", "0\n\n", "5;e\nhello\r\n", "5\r\nhello\n"} {
		var s chunkScanner
		if _, _, err := s.scan([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// FuzzChunkScanner checks the scanner against net/http's chunked reader:
// where the scanner says a body ends, the reader reads the same body.
func FuzzChunkScanner(f *testing.F) {
	f.Add(chunked(f, "hello", "world"))
	f.Add([]byte("0\r\n\r\n"))
	f.Add([]byte("a;x=y\r\n0123456789\r\n0\r\nT: v\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s chunkScanner
		n, done, err := s.scan(in)
		if err != nil || !done {
			return
		}
		r := bufio.NewReader(bytes.NewReader(in[:n]))
		if _, err := io.ReadAll(httputil.NewChunkedReader(r)); err != nil {
			t.Fatalf("scanner ended a body net/http rejects: %q: %v", in[:n], err)
		}
	})
}
