package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeSecondSignalForces: SIGINT starts the drain, which would wait
// for the running request (10^5 tokens, up to --timeout 600 s); a second
// SIGINT cancels it and the server exits at once, saying so.
func TestServeSecondSignalForces(t *testing.T) {
	// Streaming compression keeps the context bounded, so the request
	// runs until it is stopped.
	s := startServe(t, "-c", "256", "--timeout", "600", "--kv-policy", "streaming", "--recent", "64")
	r := s.stream(t, `{"prompt":"Once upon a time","n_predict":100000,"ignore_eos":true,"temperature":0,"stream":true}`)
	s.cmd.Process.Signal(syscall.SIGINT)
	waitForLog(t, s, "shutting down")
	// Still draining: the request goes on.
	for i := 0; i < 40; i++ {
		if line, err := r.ReadString('\n'); err != nil {
			t.Fatalf("the request stopped on the first SIGINT: %q %v\n%s", line, err, s.logs.String())
		}
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	start := time.Now()
	done := make(chan error, 1)
	go func() { <-s.logDone; done <- s.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after the second SIGINT\n%s", s.logs.String())
	}
	t.Logf("exited %v after the second SIGINT: %v", time.Since(start).Round(time.Millisecond), err)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("exit after a forced stop: %v, want a non-zero status", err)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "forced") || !strings.Contains(logs, "stopped") {
		t.Errorf("the log does not say the stop was forced:\n%s", logs)
	}
	// The stream was cut, not finished.
	var rest strings.Builder
	for {
		line, err := r.ReadString('\n')
		rest.WriteString(line)
		if err != nil {
			break
		}
	}
	if strings.Contains(rest.String(), `"stop":true`) && strings.Contains(rest.String(), `"tokens_predicted":100000`) {
		t.Errorf("the request finished all its tokens; it should have been cancelled")
	}
}

// waitForLog waits up to 30 s for text in s's log.
func waitForLog(t *testing.T, s *served, text string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s.logs.String(), text); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after 30 s:\n%s", text, s.logs.String())
		}
	}
}

// TestInterrupts: the first signal cancels the context, the second the
// forced one; stop ends the notification and its goroutine. SIGUSR1
// stands in for SIGINT (the test sends it to itself).
func TestInterrupts(t *testing.T) {
	// os/signal starts its one goroutine, for good, on the first use.
	_, stop := interrupts(context.Background(), syscall.SIGUSR1)
	stop()
	time.Sleep(10 * time.Millisecond)
	before := runtime.NumGoroutine()
	ctx, stop := interrupts(context.Background(), syscall.SIGUSR1)
	force := forced(ctx)
	self, _ := os.FindProcess(os.Getpid())
	self.Signal(syscall.SIGUSR1)
	waitDone(t, ctx, "the context after one signal")
	if force.Err() != nil {
		t.Fatal("one signal forced the stop")
	}
	self.Signal(syscall.SIGUSR1)
	waitDone(t, force, "the forced context after two signals")
	stop()
	stop() // twice is fine
	waitGoroutines(t, before)

	// Stopped before any signal: both cancelled, nothing left running.
	ctx, stop = interrupts(context.Background(), syscall.SIGUSR1)
	stop()
	if ctx.Err() == nil || forced(ctx).Err() == nil {
		t.Error("stop did not cancel the contexts")
	}
	waitGoroutines(t, before)
	// Outside interrupts, nothing forces.
	if forced(context.Background()).Done() != nil {
		t.Error("forced(Background) can be cancelled")
	}
}

func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s is not cancelled", what)
	}
}

// waitGoroutines waits for the goroutines to fall back to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before: the notification leaks", runtime.NumGoroutine(), n)
		}
	}
}
