package server

import (
	"encoding/json"

	"github.com/kvtrim/kvtrim/internal/jsongrammar"
)

// structuredFields are the request fields that ask for an answer shaped
// by a JSON Schema, turned into a GBNF grammar as llama-server turns them
// (internal/jsongrammar).
type structuredFields struct {
	JSONSchema     json.RawMessage `json:"json_schema"`
	ResponseFormat json.RawMessage `json:"response_format"`
}

// responseFormat is OpenAI's response_format.
type responseFormat struct {
	Type       string          `json:"type"`
	Schema     json.RawMessage `json:"schema"`
	JSONSchema *struct {
		Schema json.RawMessage `json:"schema"`
	} `json:"json_schema"`
}

// isNull says whether a raw field is absent or null.
func isNull(raw json.RawMessage) bool { return !isSet(raw) }

// given says whether a raw field holds something: present, not null, and
// not an empty string, list or object.
func given(raw json.RawMessage) bool { return !isNull(raw) && !empty(raw) }

// completionSchema is a completion request's schema: json_schema, unless
// a grammar is given, which llama-server then uses instead. A
// response_format other than text is refused (llama-server reads it in
// chats only).
func (f *structuredFields) completionSchema(grammar *string) (json.RawMessage, error) {
	if !isNull(f.ResponseFormat) && !textFormat(f.ResponseFormat) {
		return nil, badRequest(`"response_format" is read in chat requests; give "json_schema" here`)
	}
	if grammar != nil || isNull(f.JSONSchema) {
		return nil, nil
	}
	return f.JSONSchema, nil
}

// chatSchema is a chat request's schema: json_schema, or the one
// response_format asks for, as llama-server's OpenAI layer reads them.
func (f *structuredFields) chatSchema(grammar *string) (json.RawMessage, error) {
	schema := f.JSONSchema
	if isNull(schema) {
		schema = nil
	}
	if schema != nil && grammar != nil && *grammar != "" {
		return nil, badRequest("Cannot use both json_schema and grammar")
	}
	if isNull(f.ResponseFormat) {
		return schema, nil
	}
	var rf responseFormat
	if err := json.Unmarshal(f.ResponseFormat, &rf); err != nil {
		return nil, badRequest(`"response_format": %v`, err)
	}
	switch rf.Type {
	case "json_object":
		if rf.Schema != nil || schema == nil {
			schema = rf.Schema
		}
	case "json_schema":
		schema = nil
		if rf.JSONSchema != nil {
			schema = rf.JSONSchema.Schema
		}
	case "", "text":
		return schema, nil
	default:
		return nil, badRequest(`response_format type must be one of "text" or "json_object", but got: %s`, rf.Type)
	}
	if isNull(schema) {
		schema = json.RawMessage(`{}`)
	}
	return schema, nil
}

// schemaGrammar converts a schema to its grammar; an empty object means
// any object, as in llama-server.
func schemaGrammar(schema json.RawMessage) (string, error) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(schema, &probe) == nil && len(probe) == 0 {
		schema = json.RawMessage(`{"type":"object"}`)
	}
	g, err := jsongrammar.FromSchema(schema)
	if err != nil {
		return "", badRequest(`"json_schema": %v`, err)
	}
	return g, nil
}
