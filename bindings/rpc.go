package bindings

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// rpcHello is ggml-rpc's handshake as llama.cpp 0.5.0 speaks it (protocol
// 7): the command byte 14, the request's size as a u64 and a request of
// 24 zero bytes (the transport capabilities: plain TCP); the answer is its
// size as a u64, then the server's major, minor and patch version, a
// padding byte and its own 24 bytes of capabilities.
const (
	rpcCmdHello    = 14
	rpcCapsSize    = 24
	rpcProtoMajor  = 7
	rpcDialTimeout = 5 * time.Second
)

// AddRPCServers registers one ggml RPC device per endpoint ("host:port",
// as llama-server's --rpc takes them), before a model is loaded: a model
// loaded with GPU layers then places its layers and KV cache on them, as
// llama.cpp's own tools do. llama.cpp aborts the process when it cannot
// connect or the server speaks another protocol, so each endpoint is
// first dialed and greeted here, and refused with an error naming it.
func (l *Library) AddRPCServers(endpoints []string) error {
	if len(endpoints) == 0 {
		return fmt.Errorf("--rpc: give one or more host:port endpoints, comma-separated")
	}
	reg := l.fn.ggmlBackendRegByName("RPC")
	if reg == 0 {
		return fmt.Errorf("--rpc: libllama %s was built without ggml's RPC backend; build one with 'kvtrim lib build --rpc' (and run its ggml-rpc-server on each host)", l.LlamaPath)
	}
	add := l.fn.ggmlBackendRegProcAddress(reg, "ggml_backend_rpc_add_server")
	if add == 0 {
		return fmt.Errorf("--rpc: libllama %s: its RPC backend has no ggml_backend_rpc_add_server", l.LlamaPath)
	}
	for _, e := range endpoints {
		if err := l.checkRPCServer(e); err != nil {
			return err
		}
	}
	for _, e := range endpoints {
		if err := l.addRPCServer(add, e); err != nil {
			return err
		}
	}
	return nil
}

// addRPCServer has ggml connect to endpoint and registers its devices.
func (l *Library) addRPCServer(add uintptr, endpoint string) error {
	c := append([]byte(endpoint), 0)
	runtime.LockOSThread()
	r, _, _ := purego.SyscallN(add, uintptr(unsafe.Pointer(&c[0])))
	runtime.UnlockOSThread()
	runtime.KeepAlive(c)
	if r == 0 {
		return fmt.Errorf("--rpc %s: ggml registered no RPC device", endpoint)
	}
	l.fn.ggmlBackendRegister(r)
	return nil
}

// checkRPCServer dials endpoint and, for llama.cpp 0.5.0 (whose protocol
// kvtrim knows), exchanges the handshake, so that a server that is down,
// unreachable or of another build gets an error rather than llama.cpp's
// abort.
func (l *Library) checkRPCServer(endpoint string) error {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("--rpc %q: give host:port", endpoint)
	}
	conn, err := net.DialTimeout("tcp", endpoint, rpcDialTimeout)
	if err != nil {
		return fmt.Errorf("--rpc %s: %v; start ggml-rpc-server there (ggml-rpc-server -H %s -p %s), of the same build as this libllama", endpoint, err, host, port)
	}
	defer conn.Close()
	if l.Release == nil || l.Release.Name != "0.5.0" {
		return nil // another release's handshake: ggml's own checks it
	}
	conn.SetDeadline(time.Now().Add(rpcDialTimeout))
	req := make([]byte, 1+8+rpcCapsSize)
	req[0] = rpcCmdHello
	binary.LittleEndian.PutUint64(req[1:], rpcCapsSize)
	var size [8]byte
	rsp := make([]byte, 4+rpcCapsSize)
	_, err = conn.Write(req)
	if err == nil {
		_, err = io.ReadFull(conn, size[:])
	}
	if err == nil && binary.LittleEndian.Uint64(size[:]) != uint64(len(rsp)) {
		err = fmt.Errorf("an answer of %d bytes", binary.LittleEndian.Uint64(size[:]))
	}
	if err == nil {
		_, err = io.ReadFull(conn, rsp)
	}
	switch {
	case err != nil:
		return fmt.Errorf("--rpc %s: the RPC handshake failed (%v): is it a ggml-rpc-server of llama.cpp %s (RPC protocol %d)?", endpoint, err, l.Release.Name, rpcProtoMajor)
	case rsp[0] != rpcProtoMajor:
		return fmt.Errorf("--rpc %s: the server speaks RPC protocol %d.%d.%d, this libllama (llama.cpp %s) %d: run the ggml-rpc-server of the same build", endpoint, rsp[0], rsp[1], rsp[2], l.Release.Name, rpcProtoMajor)
	}
	return nil
}

// ParseRPCEndpoints splits --rpc's comma-separated list.
func ParseRPCEndpoints(list string) []string {
	var out []string
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
