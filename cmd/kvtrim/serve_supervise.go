package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim/internal/server"
)

// workerEnv names the unix socket a supervised kvtrim serve (the model's
// process) listens on instead of --host and --port.
const workerEnv = "KVTRIM_SERVE_WORKER"

// supervise runs kvtrim serve with --rpc: llama.cpp aborts the process when
// an RPC server goes away mid-request (ggml-rpc has no other answer to a
// broken connection), so the model lives in a child process, this same
// command listening on a unix socket, and this one listens on --host and
// --port and passes every request through. When the child dies, the
// requests it was serving end with llama-server's error JSON (a last
// event, for a stream), /health answers 503 meanwhile, and the child is
// started again, and again, until its RPC servers answer. The first
// interrupt is passed on (the child lets its requests finish), the second
// too.
func supervise(ctx context.Context, args []string, f *serveFlags, port int, timeout time.Duration, log zerolog.Logger) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("serve --rpc: find this program to run the model's process: %w", err)
	}
	dir, err := os.MkdirTemp("", "kvtrim-serve-")
	if err != nil {
		return fmt.Errorf("serve --rpc: %w", err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "worker.sock")
	lns, err := listen(f.host, port)
	if err != nil {
		return err
	}
	w := &worker{exe: exe, args: args, sock: sock, log: log}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "kvtrim-worker"
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableCompression: true,
		},
		FlushInterval: -1, // events as they come
		ModifyResponse: func(resp *http.Response) error {
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				resp.Body = &streamGuard{body: resp.Body}
			}
			return nil
		},
		ErrorHandler: func(rw http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(r.Context().Err(), context.Canceled) {
				return // the client left
			}
			server.WriteUnavailable(rw, w.why(err))
		},
	}
	hs := &http.Server{Handler: writeDeadlines(proxy, timeout), ReadHeaderTimeout: timeout, IdleTimeout: timeout}
	served := make(chan error, len(lns))
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		go func() { served <- hs.Serve(ln) }()
		addrs[i] = ln.Addr().String()
	}
	log.Info().Str("addr", strings.Join(addrs, ",")).Str("rpc", f.g.rpc).Msg("listening; the model runs in a process of its own, started again if an RPC server goes away")
	stopped := make(chan error, 1)
	go func() { stopped <- w.run(ctx) }()
	select {
	case <-ctx.Done():
	case err := <-stopped:
		hs.Close()
		if err != nil {
			return fmt.Errorf("serve --rpc: %w", err)
		}
		return nil
	case err := <-served:
		w.stop(syscall.SIGTERM)
		<-stopped
		return fmt.Errorf("serve: %w", err)
	}
	// The first interrupt: the child lets its requests finish; so does the
	// proxy. A second one is passed on too.
	log.Info().Msg("shutting down: the model's process finishes the running requests")
	w.stop(syscall.SIGINT)
	go func() {
		<-forced(ctx).Done()
		w.stop(syscall.SIGINT)
	}()
	sctx, cancel := context.WithTimeout(forced(ctx), timeout+5*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	<-stopped
	hs.Close()
	log.Info().Msg("stopped")
	return nil
}

// worker is the model's process: started, watched, and started again.
type worker struct {
	exe  string
	args []string
	sock string
	log  zerolog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	lastEnd string // how the last one ended, for the errors answered meanwhile
	quit    bool
}

// run starts the child and starts it again whenever it ends, waiting 1 s,
// then longer up to 10 s while it keeps failing, until ctx is done. The
// first child failing on its own (a bad flag, an RPC server down at
// start: it has said why) ends run with an error instead.
func (w *worker) run(ctx context.Context) error {
	backoff := time.Second
	for first := true; ; first = false {
		cmd := exec.Command(w.exe, append([]string{"serve"}, w.args...)...)
		cmd.Env = append(os.Environ(), workerEnv+"="+w.sock)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = workerAttr()
		w.mu.Lock()
		if w.quit {
			w.mu.Unlock()
			return nil
		}
		err := cmd.Start()
		if err == nil {
			w.cmd = cmd
		}
		w.mu.Unlock()
		began := time.Now()
		if err == nil {
			err = cmd.Wait()
		}
		w.mu.Lock()
		w.cmd = nil
		w.lastEnd = describeExit(err)
		quit := w.quit || ctx.Err() != nil
		w.mu.Unlock()
		var ee *exec.ExitError
		switch {
		case quit:
			return nil
		case first && errors.As(err, &ee) && ee.ExitCode() > 0:
			return fmt.Errorf("the model's process did not start (%s)", w.lastEnd)
		case first && err != nil && ee == nil:
			return fmt.Errorf("start the model's process: %w", err)
		}
		if time.Since(began) > 30*time.Second {
			backoff = time.Second // it ran: a fresh failure
		}
		w.log.Warn().Str("ended", w.lastEnd).Dur("restart_in", backoff).Msg("the model's process ended (an RPC server went away?); starting it again")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// stop sends sig to the child and starts no other.
func (w *worker) stop(sig os.Signal) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.quit = true
	if w.cmd != nil && w.cmd.Process != nil {
		w.cmd.Process.Signal(sig)
	}
}

// why is the message of a request the child could not answer.
func (w *worker) why(err error) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := "the model's process is not answering (it is starting, or starting again after an RPC server went away): retry shortly"
	if w.lastEnd != "" {
		msg += "; it last ended: " + w.lastEnd
	}
	return msg + " (" + err.Error() + ")"
}

// describeExit says how a child ended.
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// streamGuard passes an event stream through and, when the child's side
// breaks off (it died), ends it with a last event holding llama-server's
// error JSON, as the server itself ends a stream that fails, rather than
// cutting it.
type streamGuard struct {
	body io.ReadCloser
	tail []byte
}

func (g *streamGuard) Read(p []byte) (int, error) {
	if g.tail != nil {
		n := copy(p, g.tail)
		if g.tail = g.tail[n:]; len(g.tail) == 0 {
			return n, io.EOF
		}
		return n, nil
	}
	n, err := g.body.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b := server.UnavailableJSON("the model's process ended mid-request (an RPC server went away?); kvtrim serve starts it again: retry shortly (" + err.Error() + ")")
		g.tail = append(append([]byte("\n\ndata: "), b...), "\n\n"...)
		return n, nil
	}
	return n, err
}

func (g *streamGuard) Close() error { return g.body.Close() }

// writeDeadlines gives every write of h's answers timeout to be done, as
// the model's process gives its own: a client that stops reading loses its
// request here too, rather than holding the proxy's connection and
// goroutine for as long as it stays connected.
func writeDeadlines(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}, r)
	})
}

// deadlineWriter sets the write deadline before each write.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.ResponseWriter.Write(p)
}

// Flush passes the proxy's flushes on (events as they come).
func (d *deadlineWriter) Flush() { d.rc.Flush() }

// Unwrap lets http.ResponseController reach the connection's writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
