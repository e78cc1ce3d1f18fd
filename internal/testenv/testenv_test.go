package testenv

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// fatalRecorder records what Eventually reports instead of failing.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper()           {}
func (f *fatalRecorder) Fatal(args ...any) { f.msg = fmt.Sprint(args...) }

func TestEventually(t *testing.T) {
	calls := 0
	rec := &fatalRecorder{TB: t}
	Eventually(rec, context.Background(), time.Second, time.Millisecond, "the third call", func() (bool, error) {
		calls++
		return calls == 3, nil
	})
	if rec.msg != "" || calls != 3 {
		t.Errorf("a condition that holds on the third call: %d calls, failure %q", calls, rec.msg)
	}

	rec = &fatalRecorder{TB: t}
	Eventually(rec, context.Background(), 50*time.Millisecond, time.Millisecond, "never", func() (bool, error) {
		return false, errors.New("still broken")
	})
	if want := "timed out after 50ms waiting for never (last error: still broken)"; rec.msg != want {
		t.Errorf("failure = %q, want %q", rec.msg, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec = &fatalRecorder{TB: t}
	Eventually(rec, ctx, 0, time.Millisecond, "nothing", Holds(func() bool { return false }))
	if want := "timed out waiting for nothing"; rec.msg != want {
		t.Errorf("failure = %q, want %q", rec.msg, want)
	}
}
