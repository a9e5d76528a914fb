package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kvtrim/kvtrim"
)

// responder shapes one endpoint's answers: the whole response, or the
// chunks of a stream.
type responder interface {
	whole(r *result) any
	delta(ev event) []any
	final(r *result) []any
	// done is whether the stream ends with "data: [DONE]" (OpenAI's).
	done() bool
}

// handleCompletion answers llama-server's native POST /completion.
func (s *Server) handleCompletion(w http.ResponseWriter, r *http.Request, e *engine) {
	req, ok := s.parse(w, r, ParseCompletionRequest)
	if !ok {
		return
	}
	s.generate(w, r, e, req, &nativeResponder{req: req, e: e})
}

// handleOAICompletion answers OpenAI's POST /v1/completions.
func (s *Server) handleOAICompletion(w http.ResponseWriter, r *http.Request, e *engine) {
	req, ok := s.parse(w, r, ParseCompletionRequest)
	if !ok {
		return
	}
	s.generate(w, r, e, req, newOAIResponder(req, e, false))
}

// handleChat answers OpenAI's POST /v1/chat/completions with the chat
// template applied to the messages.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parse(w, r, ParseChatRequest); ok {
		s.generateChat(w, r, e, req, newOAIResponder(req, e, true))
	}
}

// generateChat renders a chat request's messages with the chat template
// into its prompt, then generates.
func (s *Server) generateChat(w http.ResponseWriter, r *http.Request, e *engine, req *Request, resp responder) {
	prompt, err := e.render(req.Chat)
	if err == nil {
		req.Prompt = prompt
		err = e.prepareTools(req)
	}
	if err == nil {
		err = e.prepareReasoning(req)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.generate(w, r, e, req, resp)
}

type parseFunc func(body []byte, def Sampling, comp kvtrim.Compression) (*Request, error)

// parse reads and parses a generation request, answering the error itself.
func (s *Server) parse(w http.ResponseWriter, r *http.Request, parse parseFunc) (*Request, bool) {
	body, err := readBody(r)
	if err == nil {
		var req *Request
		if req, err = parse(body, s.cfg.Sampling, *s.compression.Load()); err == nil {
			return req, true
		}
	}
	writeError(w, err)
	return nil, false
}

// generate tokenizes and checks the prompt, queues the request for a slot
// and answers with its result, whole or streamed.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, e *engine, req *Request, resp responder) {
	if len(req.Batch) > 0 {
		s.generateBatch(r.Context(), w, e, req, resp)
		return
	}
	tokens, err := e.prepare(req)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	if req.Choices > 1 {
		s.generateChoices(ctx, w, e, req, tokens, resp)
		return
	}
	j := newJob(ctx, req, tokens)
	if err := e.pool.submit(j); err != nil {
		writeError(w, err)
		return
	}
	stream := newSSE(w, s.cfg.WriteTimeout)
	for {
		select {
		case <-ctx.Done():
			return // the client went away; the slot sees the same context
		case <-e.pool.quit:
			stream.fail(unavailable("the server is shutting down"))
			return
		case ev := <-j.events:
			if sendAll(stream, resp.delta(ev)) != nil {
				return // a write failed or timed out: the slot stops at its next token
			}
		case ev := <-j.done:
			s.finish(stream, j, req, resp, ev)
			return
		}
	}
}

// finish answers a finished job: the deltas still queued, then the error,
// the whole answer, or the stream's last chunks and its end.
func (s *Server) finish(stream *sse, j *job, req *Request, resp responder, ev event) {
	if s.finishJob(stream, j, req, resp, ev) && req.Stream && ev.err == nil && resp.done() {
		stream.raw([]byte("[DONE]"))
	}
}

// finishJob sends a finished job's deltas still queued, then its error,
// whole answer or last chunks, and reports whether the stream goes on.
func (s *Server) finishJob(stream *sse, j *job, req *Request, resp responder, ev event) bool {
drain:
	for {
		select {
		case d := <-j.events:
			if sendAll(stream, resp.delta(d)) != nil {
				return false
			}
		default:
			break drain
		}
	}
	switch {
	case ev.err != nil:
		if j.ctx.Err() == nil {
			s.log.Debug().Err(ev.err).Msg("request failed")
			stream.fail(ev.err)
		}
		return false
	case !req.Stream:
		stream.whole(resp.whole(ev.res))
		return false
	}
	return sendAll(stream, resp.final(ev.res)) == nil
}

// nativeResponder shapes POST /completion's answers.
type nativeResponder struct {
	req   *Request
	e     *engine
	index int // of the prompt, when several stream together
}

func (n *nativeResponder) whole(r *result) any {
	return n.e.nativeAnswer(n.req, r, r.content, n.index)
}

func (n *nativeResponder) delta(ev event) []any {
	if ev.progress != nil {
		return []any{completionResponse{Index: n.index, Tokens: []kvtrim.Token{}, IDSlot: ev.slot, Progress: ev.progress, Timings: ev.timings}}
	}
	// A stream's chunks always carry their tokens, as llama-server's.
	tokens := ev.tokens
	if tokens == nil {
		tokens = []kvtrim.Token{}
	}
	return []any{completionResponse{Index: n.index, Content: ev.delta, Tokens: tokens, IDSlot: ev.slot, Probs: ev.probs, Timings: ev.timings}}
}

func (n *nativeResponder) final(r *result) []any {
	return []any{n.e.nativeAnswer(n.req, r, "", n.index)}
}

func (n *nativeResponder) done() bool { return false }

// oaiResponder shapes OpenAI's completion and chat answers.
type oaiResponder struct {
	req     *Request
	e       *engine
	chat    bool
	id      string
	created int64
	first   bool // the role chunk of a chat stream is still to send
	index   int  // of the choice (or prompt), when several stream together
	// answer splits a streamed chat answer's reasoning and tool calls
	// out (made at its first delta).
	answer *answerStream
}

func newOAIResponder(req *Request, e *engine, chat bool) *oaiResponder {
	prefix := "cmpl-"
	if chat {
		prefix = "chatcmpl-"
	}
	return &oaiResponder{req: req, e: e, chat: chat, id: newID(prefix), created: time.Now().Unix(), first: chat}
}

func (o *oaiResponder) object(chunk bool) string {
	switch {
	case !o.chat:
		return "text_completion"
	case chunk:
		return "chat.completion.chunk"
	}
	return "chat.completion"
}

func (o *oaiResponder) response(chunk bool, choice oaiChoice) oaiResponse {
	choice.Index = o.index
	return oaiResponse{
		ID: o.id, Object: o.object(chunk), Created: o.created, Model: o.e.name,
		SystemFingerprint: o.e.fingerprint, Choices: []oaiChoice{choice},
	}
}

func (o *oaiResponder) whole(r *result) any {
	content := r.content
	choice := oaiChoice{FinishReason: finishReason(r.stopType)}
	if o.chat {
		reasoningText, text, calls := splitAnswer(o.req, r.content)
		content = text
		choice.Message = &oaiMessage{Role: "assistant", Content: &content}
		if reasoningText != "" {
			choice.Message.ReasoningContent = &reasoningText
		}
		if len(calls) > 0 {
			choice.Message.ToolCalls = toolCallsOut(calls, false)
			if content == "" {
				choice.Message.Content = nil
			}
			choice.FinishReason = toolCallsReason()
		}
	} else {
		choice.Text = &content
	}
	if len(r.probs) > 0 {
		choice.Logprobs = logprobsObject{Content: r.probs}
	}
	resp := o.response(false, choice)
	resp.Usage, resp.Timings, resp.Kvtrim = usageOf(r), timingsOf(r), kvStatsOf(r.stats)
	resp.Verbose = o.verbose(r)
	return resp
}

// verbose is the __verbose object of an answer to o's request, or nil.
func (o *oaiResponder) verbose(r *result) any {
	if !o.e.verbose(o.req) {
		return nil
	}
	return o.e.nativeAnswer(o.req, r, r.content, 0)
}

func (o *oaiResponder) delta(ev event) []any {
	if ev.progress != nil {
		// As llama-server: a progress chunk of a chat is a role chunk.
		var c oaiResponse
		if o.chat {
			c = o.response(true, oaiChoice{Delta: roleDelta{Role: "assistant"}})
		} else {
			empty := ""
			c = o.response(true, oaiChoice{Text: &empty})
		}
		c.Progress, c.Timings = ev.progress, ev.timings
		return []any{c}
	}
	text := ev.delta
	var logprobs any
	if len(ev.probs) > 0 {
		logprobs = logprobsObject{Content: ev.probs}
	}
	if !o.chat {
		c := o.response(true, oaiChoice{Text: &text, Logprobs: logprobs})
		c.Timings = ev.timings
		return []any{c}
	}
	if o.answer == nil {
		o.answer = newAnswerStream(o.req)
	}
	reasoningText, text := o.answer.write(text)
	return o.chatDeltas(reasoningText, text, logprobs, ev.timings)
}

// chatDeltas are a chat stream's chunks for a piece of reasoning and of
// content (split by answerStream); a chunk with nothing to carry is left
// out.
func (o *oaiResponder) chatDeltas(reasoningText, text string, logprobs any, timings *Timings) []any {
	out := o.roleChunk()
	if reasoningText != "" {
		out = append(out, o.response(true, oaiChoice{Delta: &oaiMessage{ReasoningContent: &reasoningText}}))
	}
	if text == "" && logprobs == nil && timings == nil {
		return out
	}
	c := o.response(true, oaiChoice{Delta: &oaiMessage{Content: &text}, Logprobs: logprobs})
	c.Timings = timings
	return append(out, c)
}

// roleChunk is a chat stream's first chunk, once: the assistant's role
// with a null content, as llama-server sends it before any text.
func (o *oaiResponder) roleChunk() []any {
	if !o.first {
		return nil
	}
	o.first = false
	return []any{o.response(true, oaiChoice{Delta: roleDelta{Role: "assistant"}})}
}

func (o *oaiResponder) final(r *result) []any {
	empty := ""
	choice := oaiChoice{FinishReason: finishReason(r.stopType)}
	if !o.chat {
		choice.Text = &empty
		last := o.response(true, choice)
		last.Usage, last.Timings, last.Kvtrim = usageOf(r), timingsOf(r), kvStatsOf(r.stats)
		last.Verbose = o.verbose(r)
		return []any{last}
	}
	// As llama-server's chat streams: the finish chunk, then with
	// stream_options.include_usage a chunk of no choices with the usage;
	// the timings (and kvtrim's stats) ride on the last. Text held back
	// as a possible tool call goes before them, as content or calls.
	out := o.roleChunk() // the role goes out even when nothing was generated
	if o.answer != nil {
		reasoningText, text, calls := o.answer.finish()
		out = append(out, o.chatDeltas(reasoningText, text, nil, nil)...)
		if len(calls) > 0 {
			out = append(out, o.response(true, oaiChoice{Delta: &oaiMessage{ToolCalls: toolCallsOut(calls, true)}}))
			choice.FinishReason = toolCallsReason()
		}
	}
	choice.Delta = &oaiMessage{}
	finish := o.response(true, choice)
	finish.Verbose = o.verbose(r) // on the first of the final chunks, as llama-server
	out = append(out, finish)
	if o.req.IncludeUsage {
		usage := o.response(true, oaiChoice{})
		usage.Choices, usage.Usage = []oaiChoice{}, usageOf(r)
		out = append(out, usage)
	}
	last := out[len(out)-1].(oaiResponse)
	last.Timings, last.Kvtrim = timingsOf(r), kvStatsOf(r.stats)
	out[len(out)-1] = last
	return out
}

func (o *oaiResponder) done() bool { return true }

// sendAll sends chunks in order, stopping at the first failed write.
func sendAll(stream *sse, chunks []any) error {
	for _, c := range chunks {
		if err := stream.send(c); err != nil {
			return err
		}
	}
	return nil
}

// prepare tokenizes and checks a request's prompt, as generate does.
func (e *engine) prepare(req *Request) ([]kvtrim.Token, error) {
	tokens, err := e.promptTokens(req)
	if err == nil {
		err = e.checkFits(req.Compression, len(tokens))
	}
	if err == nil {
		err = e.resolveLogitBias(req)
	}
	if g := req.Sampling.Grammar; err == nil && g != "" && g != e.grammarOK && e.model.Vocab().CheckGrammar(g) != nil {
		err = badRequest("Failed to initialize samplers: failed to parse grammar")
	}
	if err == nil && req.Slot >= len(e.pool.slots) {
		err = badRequest("id_slot %d: the server has slots 0 to %d (-np)", req.Slot, len(e.pool.slots)-1)
	}
	return tokens, err
}

// batchResponder shapes the answer to several prompts in one request.
type batchResponder interface {
	wholeBatch(reqs []*Request, rs []*result) any
}

// generateBatch answers several prompts in one request (not streamed), as
// llama-server does: a job each, queued together, the answers in order.
func (s *Server) generateBatch(ctx context.Context, w http.ResponseWriter, e *engine, req *Request, resp responder) {
	br, ok := resp.(batchResponder)
	if !ok {
		writeError(w, badRequest("this endpoint answers one prompt per request"))
		return
	}
	jobs := make([]*job, len(req.Batch))
	for i, sub := range req.Batch {
		tokens, err := e.prepare(sub)
		if err != nil {
			ae := *asAPIError(err) // its type and status, the prompt named
			ae.Message = fmt.Sprintf("prompt[%d]: %s", i, ae.Message)
			writeError(w, &ae)
			return
		}
		jobs[i] = newJob(ctx, sub, tokens)
	}
	s.serveJobs(ctx, w, e, req, jobs, resp, func(rs []*result) any { return br.wholeBatch(req.Batch, rs) })
}

// runJobs submits jobs and waits for them all; results is nil when the
// client went away.
func (s *Server) runJobs(ctx context.Context, e *engine, jobs []*job) ([]*result, error) {
	for _, j := range jobs {
		if err := e.pool.submit(j); err != nil {
			return nil, err
		}
	}
	results := make([]*result, len(jobs))
	var failed error
	for i, j := range jobs {
		select {
		case ev := <-j.done:
			if ev.err != nil && failed == nil {
				failed = ev.err
			}
			results[i] = ev.res
		case <-ctx.Done():
			return nil, nil // the slots see the same context
		}
	}
	return results, failed
}

// wholeBatch is /completion's answer to several prompts: a list of
// answers, each with its index.
func (n *nativeResponder) wholeBatch(reqs []*Request, rs []*result) any {
	out := make([]any, len(rs))
	for i, r := range rs {
		out[i] = n.e.nativeAnswer(reqs[i], r, r.content, i)
	}
	return out
}

// wholeBatch is an OpenAI completion's answer to several prompts: a choice
// each, the usage summed over them.
func (o *oaiResponder) wholeBatch(_ []*Request, rs []*result) any {
	resp := o.whole(rs[0]).(oaiResponse)
	resp.Choices = resp.Choices[:0]
	var usage oaiUsage
	for i, r := range rs {
		c := o.whole(r).(oaiResponse).Choices[0]
		c.Index = i
		resp.Choices = append(resp.Choices, c)
		usage.PromptTokens += r.promptN
		usage.CompletionTokens += r.predictedN
		usage.PromptTokensDetails.CachedTokens += r.cacheN
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	resp.Usage = &usage
	return resp
}

// indexedResponder makes the responder of the i-th of several answers
// streamed together (prompts, or choices): its chunks carry index i, and
// any per-stream state (the chat's role chunk) is its own.
type indexedResponder interface {
	indexed(i int) responder
}

func (n *nativeResponder) indexed(i int) responder {
	c := *n
	c.index = i
	return &c
}

func (o *oaiResponder) indexed(i int) responder {
	c := *o
	c.index = i
	return &c
}

// streamJobs streams the answers of several jobs (prompts or choices) of
// one request, as llama-server does: queued together, each job's chunks
// sent as they come, with its index, the jobs interleaved, and one
// [DONE] (OpenAI's) after all of them.
func (s *Server) streamJobs(ctx context.Context, w http.ResponseWriter, e *engine, jobs []*job, resp responder) {
	ir, ok := resp.(indexedResponder)
	if !ok {
		writeError(w, badRequest("this endpoint streams one answer per request"))
		return
	}
	for _, j := range jobs {
		if err := e.pool.submit(j); err != nil {
			writeError(w, err) // the jobs already queued see the same context, cancelled on return
			return
		}
	}
	type tagged struct {
		i    int
		ev   event
		done bool
	}
	merged := make(chan tagged)
	forward := func(i int, j *job) {
		send := func(t tagged) bool {
			select {
			case merged <- t:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			select {
			case ev := <-j.events:
				if !send(tagged{i: i, ev: ev}) {
					return
				}
			case ev := <-j.done:
				send(tagged{i: i, ev: ev, done: true})
				return
			case <-ctx.Done():
				return
			}
		}
	}
	resps := make([]responder, len(jobs))
	for i, j := range jobs {
		resps[i] = ir.indexed(i)
		go forward(i, j)
	}
	stream := newSSE(w, s.cfg.WriteTimeout)
	for left := len(jobs); left > 0; {
		select {
		case <-ctx.Done():
			return
		case <-e.pool.quit:
			stream.fail(unavailable("the server is shutting down"))
			return
		case t := <-merged:
			if !t.done {
				if sendAll(stream, resps[t.i].delta(t.ev)) != nil {
					return
				}
				continue
			}
			left--
			if !s.finishJob(stream, jobs[t.i], jobs[t.i].req, resps[t.i], t.ev) {
				return
			}
		}
	}
	if resp.done() {
		stream.raw([]byte("[DONE]"))
	}
}

// choicesResponder shapes one answer of several choices (OpenAI's n).
type choicesResponder interface {
	wholeChoices(rs []*result) any
}

// generateChoices answers a request for several choices (not streamed):
// one job each, queued together (they may run on several slots at once),
// a fixed seed moved by one for each so that sampled answers differ.
func (s *Server) generateChoices(ctx context.Context, w http.ResponseWriter, e *engine, req *Request, tokens []kvtrim.Token, resp responder) {
	cr, ok := resp.(choicesResponder)
	if !ok {
		writeError(w, badRequest("n %d: this endpoint answers one choice", req.Choices))
		return
	}
	jobs := make([]*job, req.Choices)
	for i := range jobs {
		ri := *req
		if ri.Sampling.Seed != RandomSeed {
			ri.Sampling.Seed += uint32(i)
		}
		jobs[i] = newJob(ctx, &ri, tokens)
	}
	s.serveJobs(ctx, w, e, req, jobs, resp, cr.wholeChoices)
}

// serveJobs answers the jobs of one request (several prompts or
// choices): streamed as they come, or whole, once all are done, as whole
// shapes them.
func (s *Server) serveJobs(ctx context.Context, w http.ResponseWriter, e *engine, req *Request, jobs []*job, resp responder, whole func([]*result) any) {
	if req.Stream {
		s.streamJobs(ctx, w, e, jobs, resp)
		return
	}
	results, err := s.runJobs(ctx, e, jobs)
	if err != nil {
		writeError(w, err)
		return
	}
	if results != nil {
		newSSE(w, s.cfg.WriteTimeout).whole(whole(results))
	}
}

// wholeChoices is the whole answer with one choice per result, the usage
// summed over them (the prompt counted once), as llama-server answers n.
func (o *oaiResponder) wholeChoices(rs []*result) any {
	resp := o.whole(rs[0]).(oaiResponse)
	resp.Choices = resp.Choices[:0]
	usage := *usageOf(rs[0])
	for i, r := range rs {
		c := o.whole(r).(oaiResponse).Choices[0]
		c.Index = i
		resp.Choices = append(resp.Choices, c)
		if i > 0 {
			usage.CompletionTokens += r.predictedN
		}
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	resp.Usage = &usage
	return resp
}
