package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Error types, as llama-server names them in its error JSON.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typeNotFound       = "not_found_error"
	typeServer         = "server_error"
	typeUnavailable    = "unavailable_error"
	typeNotSupported   = "not_supported_error"
	// typeExceedContext is a prompt larger than a slot's context.
	typeExceedContext = "exceed_context_size_error"
)

// APIError is an error with the HTTP status and llama-server error type it
// is answered with.
type APIError struct {
	Code    int
	Type    string
	Message string
	// RetryAfter, when > 0, is sent as the Retry-After header (seconds).
	RetryAfter int
	// NPromptTokens and NCtx, for exceed_context_size_error, are the
	// prompt's tokens and the slot's context, as llama-server reports them.
	NPromptTokens, NCtx int
}

// Error returns the message.
func (e *APIError) Error() string { return e.Message }

func badRequest(format string, a ...any) *APIError {
	return &APIError{Code: http.StatusBadRequest, Type: typeInvalidRequest, Message: fmt.Sprintf(format, a...)}
}

func unavailable(msg string) *APIError {
	return &APIError{Code: http.StatusServiceUnavailable, Type: typeUnavailable, Message: msg}
}

func notSupported(msg string) *APIError {
	return &APIError{Code: http.StatusNotImplemented, Type: typeNotSupported, Message: msg}
}

// errorBody is llama-server's error JSON.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code          int    `json:"code"`
	Message       string `json:"message"`
	Type          string `json:"type"`
	NPromptTokens int    `json:"n_prompt_tokens,omitempty"`
	NCtx          int    `json:"n_ctx,omitempty"`
}

// asAPIError turns err into an APIError: itself if it is one, else a 500.
func asAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return &APIError{Code: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

// WriteUnavailable answers msg as llama-server's 503 error JSON: what a
// proxy in front of the server says while the server cannot answer.
func WriteUnavailable(w http.ResponseWriter, msg string) { writeError(w, unavailable(msg)) }

// UnavailableJSON is llama-server's 503 error JSON for msg, as the last
// event of a stream that cannot go on carries it.
func UnavailableJSON(msg string) []byte {
	b, _ := json.Marshal(unavailable(msg).body())
	return b
}

// body is e as llama-server's error JSON without the context sizes: what a
// stream's last event and a batch's failed entry carry.
func (e *APIError) body() errorBody {
	return errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Type: e.Type}}
}

// writeError answers err in llama-server's error JSON.
func writeError(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	writeJSON(w, ae.Code, errorBody{Error: errorDetail{Code: ae.Code, Message: ae.Message, Type: ae.Type, NPromptTokens: ae.NPromptTokens, NCtx: ae.NCtx}})
}

// writeJSON answers v as JSON with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":500,"message":"encode the response","type":"server_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
