package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"unsafe"
)

// This file parses HTTP/1.1 heads for the event-loop data path (evloop_linux.go)
// in place, without allocating. The request parser is strict on purpose: it
// accepts only the common, unambiguous form and answers "not here" for
// everything else, which the loop then hands to the net/http-based path with
// the bytes read so far. So the fast path never decides an odd case
// differently from the tested general one.

// headerField is one header line; both slices point into the read buffer.
type headerField struct {
	name, value []byte
}

// reqHead is a parsed request head.
type reqHead struct {
	size          int // bytes up to and including the blank line
	method        []byte
	target        []byte // origin-form: path and query
	pathEnd       int    // target[:pathEnd] is the path
	host          []byte
	contentLength int64
	connClose     bool
	fields        []headerField
}

type parseResult int

const (
	parseIncomplete parseResult = iota
	parseOK
	parseElsewhere // valid or not, the general path decides
)

// maxFastHead is the largest request or response head the loop parses;
// a larger request goes to the general path.
const maxFastHead = 16 << 10

// parseRequestHead parses b's request head into h (reusing h.fields).
func parseRequestHead(b []byte, h *reqHead) parseResult {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		if len(b) >= maxFastHead {
			return parseElsewhere
		}
		return parseIncomplete
	}
	*h = reqHead{size: end + 4, contentLength: 0, fields: h.fields[:0]}
	line, rest := cutLine(b[:end+2])
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !isToken(line[:sp]) {
		return parseElsewhere
	}
	h.method = line[:sp]
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 || string(line[sp+1:]) != "HTTP/1.1" {
		return parseElsewhere
	}
	h.target = line[:sp]
	h.pathEnd = -1
	if h.target[0] != '/' {
		return parseElsewhere // absolute-form, asterisk-form
	}
	for i, c := range h.target {
		switch {
		case c == '?' && h.pathEnd < 0:
			h.pathEnd = i
		case h.pathEnd < 0 && !pathSafe[c]:
			return parseElsewhere // escapes and characters net/url would rewrite
		case c <= ' ' || c >= 0x7f || c == '#':
			return parseElsewhere
		}
	}
	if h.pathEnd < 0 {
		h.pathEnd = len(h.target)
	}
	haveLength := false
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return parseElsewhere // obs-fold, space before the colon, junk
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return parseElsewhere
			}
		}
		switch {
		case asciiEqualFold(name, "host"):
			if h.host != nil {
				return parseElsewhere
			}
			h.host = value
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if haveLength || err != nil || n < 0 || value[0] == '+' {
				return parseElsewhere
			}
			haveLength, h.contentLength = true, n
		case asciiEqualFold(name, "connection"):
			for tok := range strings.SplitSeq(string(value), ",") {
				switch tok = strings.TrimSpace(tok); {
				case strings.EqualFold(tok, "close"):
					h.connClose = true
				case strings.EqualFold(tok, "keep-alive"), tok == "":
				default:
					return parseElsewhere // it names headers to remove
				}
			}
		case asciiEqualFold(name, "transfer-encoding"), asciiEqualFold(name, "expect"), asciiEqualFold(name, "upgrade"):
			return parseElsewhere
		}
		h.fields = append(h.fields, headerField{name: name, value: value})
	}
	if h.host == nil {
		return parseElsewhere
	}
	return parseOK
}

// respHead is a parsed response head.
type respHead struct {
	size          int
	status        int
	minor         int // HTTP/1.x
	reason        []byte
	contentLength int64 // -1: not given
	chunked       bool
	connClose     bool
	keepAlive     bool
	hasDate       bool
	fields        []headerField
}

var errUpstreamProtocol = errors.New("upstream protocol error")

// parseResponseHead parses b's response head into h. It accepts bare LF
// line ends, as net/http does.
func parseResponseHead(b []byte, h *respHead) (parseResult, error) {
	end, sep := bytes.Index(b, crlfcrlf), 4
	if lf := bytes.Index(b, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
		end, sep = lf, 2
	}
	if end < 0 {
		if len(b) >= maxFastHead*4 {
			return parseElsewhere, errors.New("upstream response headers too large")
		}
		return parseIncomplete, nil
	}
	*h = respHead{size: end + sep, contentLength: -1, fields: h.fields[:0]}
	line, rest := cutLine(b[:end+sep/2])
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return parseElsewhere, errUpstreamProtocol
	}
	h.minor = int(line[7] - '0')
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || (len(line) > 12 && line[12] != ' ') {
		return parseElsewhere, errUpstreamProtocol
	}
	h.status = code
	if len(line) > 13 {
		h.reason = line[13:]
	}
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return parseElsewhere, errUpstreamProtocol
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.contentLength >= 0 && h.contentLength != n) {
				return parseElsewhere, errUpstreamProtocol
			}
			h.contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			if !asciiEqualFold(value, "chunked") || h.chunked {
				return parseElsewhere, errUpstreamProtocol
			}
			h.chunked = true
		case asciiEqualFold(name, "connection"):
			for tok := range strings.SplitSeq(string(value), ",") {
				switch tok = strings.TrimSpace(tok); {
				case strings.EqualFold(tok, "close"):
					h.connClose = true
				case strings.EqualFold(tok, "keep-alive"):
					h.keepAlive = true
				}
			}
		case asciiEqualFold(name, "date"):
			h.hasDate = true
		}
		h.fields = append(h.fields, headerField{name: name, value: value})
	}
	if h.chunked {
		h.contentLength = -1 // Transfer-Encoding wins (RFC 9112 §6.3)
	}
	return parseOK, nil
}

var crlfcrlf = []byte("\r\n\r\n")

// cutLine splits off the first line, dropping its CRLF or LF.
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold compares b with a lower-case ASCII name.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return len(b) > 0
}

var tokenChar, pathSafe [256]bool

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenChar[c], pathSafe[c] = true, true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenChar[c], pathSafe[c] = true, true
		tokenChar[c-'a'+'A'], pathSafe[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		tokenChar[c] = true
	}
	// Unreserved and sub-delims, ':', '@' and '/': what net/url keeps as
	// it is in a path, so EscapedPath is the raw path.
	for _, c := range "-._~!$&'()*+,;=:@/" {
		pathSafe[c] = true
	}
}

// chunkScanner follows a chunked body that is relayed as it is, to find
// where it ends. Like net/http's reader it wants CRLF, not a bare LF, after
// a size line, a chunk and the last line: two parsers that disagree on where
// a body ends are how responses get desynchronised.
type chunkScanner struct {
	state  int
	size   int64
	digits int
}

const (
	csSize = iota
	csSizeWS
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailer
	csTrailerLine
	csTrailerLF
	csDone
)

var errBadChunk = errors.New("malformed chunked encoding")

// scan consumes p up to the end of the body at most; it reports how many
// bytes belong to the body and whether the body ended.
func (s *chunkScanner) scan(p []byte) (int, bool, error) {
	i := 0
	for i < len(p) {
		c := p[i]
		switch s.state {
		case csSize:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if s.digits++; s.digits > 12 {
					return i, false, errBadChunk
				}
				s.size = s.size<<4 | int64(unhex(c))
			case s.digits > 0 && c == ';':
				s.state = csExt
			case s.digits > 0 && (c == ' ' || c == '\t'):
				s.state = csSizeWS
			case s.digits > 0 && c == '\r':
				s.state = csSizeLF
			default:
				return i, false, errBadChunk
			}
			i++
		case csSizeWS: // whitespace is allowed only before the line's end
			switch c {
			case ' ', '\t':
			case '\r':
				s.state = csSizeLF
			default:
				return i, false, errBadChunk
			}
			i++
		case csExt:
			if c == '\r' {
				s.state = csSizeLF
			} else if c == '\n' {
				return i, false, errBadChunk
			}
			i++
		case csSizeLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			s.endSize()
			i++
		case csData:
			n := int64(len(p) - i)
			if n > s.size {
				n = s.size
			}
			i += int(n)
			if s.size -= n; s.size == 0 {
				s.state = csDataCR
			}
		case csDataCR:
			switch c {
			case '\r':
				s.state = csDataLF
			default:
				return i, false, errBadChunk
			}
			i++
		case csDataLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			*s = chunkScanner{}
			i++
		case csTrailer:
			i++
			switch c {
			case '\r':
				s.state = csTrailerLF
			case '\n':
				return i, false, errBadChunk
			default:
				s.state = csTrailerLine
			}
		case csTrailerLine:
			if c == '\n' {
				s.state = csTrailer
			}
			i++
		case csTrailerLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			s.state = csDone
			return i + 1, true, nil
		case csDone:
			return i, true, nil
		}
	}
	return i, s.state == csDone, nil
}

func (s *chunkScanner) endSize() {
	if s.size == 0 {
		s.state = csTrailer
	} else {
		s.state = csData
	}
	s.digits = 0
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// fastRequest is a loop-parsed request as a requestView. Its strings
// alias the read buffer (view): route matching reads them and keeps none,
// and the buffer does not change while it runs.
type fastRequest struct{ hd *reqHead }

func (r fastRequest) escapedPath() string { return view(r.hd.target[:r.hd.pathEnd]) }
func (r fastRequest) requestURI() string  { return view(r.hd.target) }
func (r fastRequest) method() string      { return view(r.hd.method) }
func (r fastRequest) authority() string   { return view(r.hd.host) }

func (r fastRequest) header(name string) (string, bool) {
	var joined []byte
	found := 0
	var first []byte
	for _, f := range r.hd.fields {
		if len(f.name) == len(name) && strings.EqualFold(view(f.name), name) {
			switch found++; found {
			case 1:
				first = f.value
			case 2:
				joined = append(append(append(joined, first...), ','), f.value...)
			default:
				joined = append(append(joined, ','), f.value...)
			}
		}
	}
	switch found {
	case 0:
		return "", false
	case 1:
		return view(first), true
	}
	return string(joined), true
}

// view returns b's bytes as a string without copying; b must not change
// while the string is in use.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
