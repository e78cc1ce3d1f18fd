package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// maxAdminBody bounds what the admin endpoint reads.
const maxAdminBody = 64 << 10

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		writeError(w, http.StatusBadRequest,
			fmt.Sprintf("status %q must be a number between 200 and 599", r.PathValue("code")))
		return
	}
	a := s.answer()
	a.Status = code
	writeJSON(w, code, a)
}

func (s *Server) delay(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.PathValue("duration"))
	if err == nil {
		err = checkLatency(d)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest,
			fmt.Sprintf("delay %q must be a duration like 200ms between 0 and %s", r.PathValue("duration"), MaxLatency))
		return
	}
	if err := s.sleep(r.Context(), d); err != nil {
		return // the client left
	}
	a := s.answer()
	a.Delay = d.String()
	writeJSON(w, http.StatusOK, a)
}

// AdminConfig is the body of /admin/config. In a request every field is
// optional and only the fields given change; an answer carries all of them.
type AdminConfig struct {
	// Version is read only; it is ignored in requests.
	Version   string   `json:"version,omitempty"`
	ErrorRate *float64 `json:"errorRate,omitempty"`
	// Latency is a Go duration such as "800ms".
	Latency *string `json:"latency,omitempty"`
	Ready   *bool   `json:"ready,omitempty"`
}

func (s *Server) adminConfig() AdminConfig {
	b := s.Behaviour()
	lat := b.Latency.String()
	return AdminConfig{Version: s.settings.Version, ErrorRate: &b.ErrorRate, Latency: &lat, Ready: &b.Ready}
}

func (s *Server) getConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.adminConfig())
}

func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	req, err := decodeAdmin(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.apply(req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.adminConfig())
}

func decodeAdmin(body io.Reader) (AdminConfig, error) {
	dec := json.NewDecoder(io.LimitReader(body, maxAdminBody))
	dec.DisallowUnknownFields()
	var req AdminConfig
	if err := dec.Decode(&req); err != nil {
		return AdminConfig{}, fmt.Errorf(`body must be JSON like {"errorRate":0.5,"latency":"800ms","ready":false}: %w`, err)
	}
	if dec.More() {
		return AdminConfig{}, errors.New("body must hold a single JSON object")
	}
	return req, nil
}

// apply validates every field first and changes the behaviour only when all
// of them are valid.
func (s *Server) apply(req AdminConfig) error {
	var errs []error
	if req.ErrorRate != nil {
		errs = append(errs, checkErrorRate(*req.ErrorRate))
	}
	var lat time.Duration
	if req.Latency != nil {
		var err error
		if lat, err = time.ParseDuration(*req.Latency); err != nil {
			errs = append(errs, fmt.Errorf("latency %q is not a duration like 800ms", *req.Latency))
		} else {
			errs = append(errs, checkLatency(lat))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.ErrorRate != nil {
		s.behaviour.ErrorRate = *req.ErrorRate
	}
	if req.Latency != nil {
		s.behaviour.Latency = lat
	}
	if req.Ready != nil {
		s.behaviour.Ready = *req.Ready
	}
	return nil
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
