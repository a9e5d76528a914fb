package server

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/kvtrim/kvtrim/internal/jsongrammar"
	"github.com/kvtrim/kvtrim/internal/toolcall"
)

// toolFields are the request fields that offer the model tools to call.
type toolFields struct {
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
}

// Tool choices, as OpenAI's tool_choice names them.
const (
	toolsAuto     = "auto"
	toolsNone     = "none"
	toolsRequired = "required"
)

// ToolUse is what a chat request asks of tools.
type ToolUse struct {
	// Tools are the functions offered; Choice is auto, none or required
	// (required with Name set: that function).
	Tools    []toolcall.Tool
	Choice   string
	Name     string
	Parallel bool
	// format reads the calls from the answer; set when the chat is
	// rendered, nil when the answer is not read for calls.
	format *toolcall.Format
}

// toolUse reads and checks the tool fields of a chat request.
func (f *toolFields) toolUse(grammar *string) (ToolUse, error) {
	u := ToolUse{Choice: toolsAuto, Parallel: f.ParallelToolCalls != nil && *f.ParallelToolCalls}
	if given(f.Tools) {
		var list []struct {
			Type     string `json:"type"`
			Function *struct {
				Name       string          `json:"name"`
				Parameters json.RawMessage `json:"parameters"`
			} `json:"function"`
		}
		if err := json.Unmarshal(f.Tools, &list); err != nil {
			return ToolUse{}, badRequest(`"tools": give a list of {"type": "function", "function": {...}}: %v`, err)
		}
		for i, t := range list {
			switch {
			case t.Type != "function":
				return ToolUse{}, badRequest("tools[%d]: type %q: only function tools are supported", i, t.Type)
			case t.Function == nil || t.Function.Name == "":
				return ToolUse{}, badRequest("tools[%d]: give the function's name", i)
			}
			if p := t.Function.Parameters; !isNull(p) {
				if _, err := jsongrammar.FromSchema(p); err != nil {
					return ToolUse{}, badRequest("tools[%d] %s: parameters: %v", i, t.Function.Name, err)
				}
			}
			u.Tools = append(u.Tools, toolcall.Tool{Name: t.Function.Name, Parameters: t.Function.Parameters})
		}
	}
	if !isNull(f.ToolChoice) {
		var choice string
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(f.ToolChoice, &choice) == nil:
			if choice != toolsAuto && choice != toolsNone && choice != toolsRequired {
				return ToolUse{}, badRequest("Invalid tool_choice: %s", choice)
			}
			u.Choice = choice
		case json.Unmarshal(f.ToolChoice, &named) == nil && named.Type == "function" && named.Function.Name != "":
			u.Choice, u.Name = toolsRequired, named.Function.Name
			if toolIndex(u.Tools, u.Name) < 0 {
				return ToolUse{}, badRequest("tool_choice: no tool named %q among the request's tools", u.Name)
			}
		default:
			return ToolUse{}, badRequest(`tool_choice: give "auto", "none", "required" or {"type": "function", "function": {"name": ...}}`)
		}
	}
	if u.Choice == toolsRequired && len(u.Tools) == 0 {
		return ToolUse{}, badRequest(`tool_choice "required": give the tools to call`)
	}
	if u.active() && grammar != nil && *grammar != "" {
		return ToolUse{}, badRequest("Cannot use custom grammar constraints with tools.")
	}
	return u, nil
}

// active says whether the answer may hold tool calls.
func (u *ToolUse) active() bool { return len(u.Tools) > 0 && u.Choice != toolsNone }

// toolIndex is the index of the tool named name, or -1.
func toolIndex(tools []toolcall.Tool, name string) int {
	return slices.IndexFunc(tools, func(t toolcall.Tool) bool { return t.Name == name })
}

// prepareTools readies a chat request for tool calls, once its template
// is known: the format its answer is read in and, when a call is
// required, the grammar that forces one.
func (e *engine) prepareTools(req *Request) error {
	u := &req.ToolUse
	if !u.active() {
		return nil
	}
	switch {
	case e.jinja == nil:
		return badRequest("tools param requires --jinja flag")
	case !e.toolsShown && u.Choice == toolsRequired:
		return badRequest(`tool_choice %q: this model's chat template does not show tools to the model, so no call can be asked of it`, u.Choice)
	case !e.toolsShown:
		// As llama-server: the model never sees the tools, and its answer
		// is read as text.
		return nil
	case e.toolFormat == nil:
		return badRequest(`"tools": this model's chat template writes tool calls in a form kvtrim serve does not read yet (it reads %s)`, strings.Join(toolcall.Names(), ", "))
	}
	u.format = e.toolFormat.WithTools(u.Tools)
	if u.Choice != toolsRequired && u.format.Triggers() == nil {
		return nil // calls read, not constrained: the format has no grammar
	}
	tools := u.Tools
	if i := toolIndex(u.Tools, u.Name); i >= 0 {
		tools = u.Tools[i : i+1]
	}
	g, err := u.format.Grammar(tools, u.Parallel)
	if err != nil {
		return badRequest("tool_choice %q: %v", u.Choice, err)
	}
	req.Sampling.Grammar = g // parsed with the prompt (engine.prepare), as every grammar
	if u.Choice != toolsRequired {
		// As llama-server: a call may come, and from its opening on the
		// grammar holds it to the tools' schemas.
		req.Sampling.GrammarTriggers = u.format.Triggers()
	}
	return nil
}

// toolCallsReason is OpenAI's finish_reason for an answer of tool calls.
func toolCallsReason() *string {
	reason := "tool_calls"
	return &reason
}

// oaiToolCall is one call in an OpenAI message's tool_calls; Index is set
// in streamed deltas.
type oaiToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// toolCallsOut turns calls into OpenAI's tool_calls, with indexes when
// streamed.
func toolCallsOut(calls []toolcall.Call, streamed bool) []oaiToolCall {
	out := make([]oaiToolCall, len(calls))
	for i, c := range calls {
		out[i].ID, out[i].Type = c.ID, "function"
		out[i].Function.Name, out[i].Function.Arguments = c.Name, c.Arguments
		if streamed {
			out[i].Index = &i
		}
	}
	return out
}
