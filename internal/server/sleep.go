package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtrim/kvtrim"
)

// sleeper is llama-server's sleep mode (--sleep-idle-seconds): after that
// long without a request, the slots and the model are freed; the next
// request that needs them loads them again first. /health, /props,
// /v1/models and /metrics answer from what they said on falling asleep,
// and do not wake the server.
type sleeper struct {
	idle time.Duration // 0: the server never sleeps
	// mu is held for reading by every request that uses the engine, and
	// for writing to fall asleep (only when no request holds it) or wake.
	mu      sync.RWMutex
	asleep  atomic.Bool
	lastUse atomic.Int64 // when the last such request ended, Unix nanoseconds
	// While asleep: the answers of the endpoints that stay up, and whether
	// a scrape has reported the throughput window (so that the server,
	// once awake, does not report it again). Guarded by cacheMu.
	cacheMu       sync.Mutex
	props, models []byte
	counters      counters
	batches       kvtrim.GroupStats
	created       int64
	scraped       bool
	quit          chan struct{}
	done          chan struct{}
}

// Run loads the model with load and starts serving, as Start does, but
// the server owns the model: Close frees it, and with Config.SleepIdle the
// server frees it when idle and calls load again on the next request that
// needs it.
func (s *Server) Run(load func() (*kvtrim.Model, error)) error {
	if s.load != nil || s.eng.Load() != nil {
		return errors.New("server already started")
	}
	model, err := load()
	if err != nil {
		return err
	}
	if err := s.Start(model); err != nil {
		model.Close()
		return err
	}
	s.load, s.owned = load, model
	if s.cfg.SleepIdle > 0 {
		s.sleep.idle = s.cfg.SleepIdle
		s.sleep.lastUse.Store(time.Now().UnixNano())
		s.sleep.quit, s.sleep.done = make(chan struct{}), make(chan struct{})
		go s.watchIdle()
	}
	return nil
}

// watchIdle puts the server to sleep once it has been idle for
// sleep.idle, until Close.
func (s *Server) watchIdle() {
	defer close(s.sleep.done)
	tick := time.NewTicker(min(250*time.Millisecond, s.sleep.idle/4))
	defer tick.Stop()
	for {
		select {
		case <-s.sleep.quit:
			return
		case <-tick.C:
		}
		if s.sleep.asleep.Load() || time.Since(time.Unix(0, s.sleep.lastUse.Load())) < s.sleep.idle {
			continue
		}
		if !s.sleep.mu.TryLock() { // a request is running
			continue
		}
		if e := s.eng.Load(); e != nil && e.pool.busy.Load() == 0 && e.pool.deferred() == 0 {
			s.fallAsleep(e)
		}
		s.sleep.mu.Unlock()
	}
}

// fallAsleep keeps what the endpoints that stay up answer, then frees the
// slots and the model. Called with sleep.mu held for writing.
func (s *Server) fallAsleep(e *engine) {
	props, err1 := json.Marshal(s.props(e, true))
	models, err2 := json.Marshal(modelsList(e))
	if err := errors.Join(err1, err2); err != nil {
		s.log.Warn().Err(err).Msg("not going to sleep")
		return
	}
	s.sleep.cacheMu.Lock()
	s.sleep.props, s.sleep.models, s.sleep.created, s.sleep.scraped = props, models, e.created, false
	s.sleep.counters, s.sleep.batches = s.metrics.snapshot(false), e.pool.decodeStats()
	s.sleep.cacheMu.Unlock()
	s.sleep.asleep.Store(true)
	s.eng.Store(nil)
	e.pool.close()
	s.owned.Close()
	s.owned = nil
	s.log.Info().Dur("idle", s.sleep.idle).Msg("sleeping: the model and the slots are freed until the next request")
}

// wake loads the model and makes the slots again, unless another request
// did first.
func (s *Server) wake() error {
	s.sleep.mu.Lock()
	defer s.sleep.mu.Unlock()
	if !s.sleep.asleep.Load() {
		return nil
	}
	t0 := time.Now()
	model, err := s.load()
	if err == nil {
		if err = s.Start(model); err != nil {
			model.Close()
		}
	}
	if err != nil {
		return unavailable(fmt.Sprintf("waking up: %v", err))
	}
	s.owned = model
	s.sleep.cacheMu.Lock()
	if s.sleep.scraped {
		s.metrics.snapshot(true) // a scrape while asleep reported the window
	}
	s.sleep.cacheMu.Unlock()
	s.sleep.asleep.Store(false)
	s.sleep.lastUse.Store(time.Now().UnixNano())
	s.log.Info().Dur("took", time.Since(t0)).Msg("awake: the model is loaded again")
	return nil
}

// use holds the engine for a request, waking the server first if it
// sleeps; call the returned func when the request is done.
func (s *Server) use() (func(), error) {
	if s.sleep.idle <= 0 {
		return func() {}, nil
	}
	s.sleep.mu.RLock()
	for s.sleep.asleep.Load() {
		s.sleep.mu.RUnlock()
		if err := s.wake(); err != nil {
			return nil, err
		}
		s.sleep.mu.RLock()
	}
	return func() {
		s.sleep.lastUse.Store(time.Now().UnixNano())
		s.sleep.mu.RUnlock()
	}, nil
}

// sleeping answers a request to an endpoint that stays up while the
// server sleeps, and reports whether it did.
func (s *Server) sleeping(w http.ResponseWriter, r *http.Request) bool {
	if !s.sleep.asleep.Load() {
		return false
	}
	s.sleep.cacheMu.Lock()
	defer s.sleep.cacheMu.Unlock()
	if !s.sleep.asleep.Load() {
		return false
	}
	switch r.URL.Path {
	case "/health", "/v1/health":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "/props":
		writeRawJSON(w, s.sleep.props)
	case "/models", "/v1/models":
		writeRawJSON(w, s.sleep.models)
	case "/metrics":
		if !s.cfg.Metrics {
			return false
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Header().Set("Process-Start-Time-Unix", strconv.FormatInt(s.sleep.created, 10))
		if err := writeMetrics(w, s.sleep.counters, 0, 0, s.sleep.batches); err != nil {
			s.log.Debug().Err(err).Msg("write metrics")
		}
		// A scrape reports the window once, asleep as awake.
		c := &s.sleep.counters
		c.windowPrompt, c.windowSteps, c.windowPromptMs, c.windowDecodeMs = 0, 0, 0, 0
		s.sleep.scraped = true
	default:
		return false
	}
	return true
}

// writeRawJSON answers 200 with JSON already encoded.
func writeRawJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
