package tokenizer

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Fixed estimates for what the encoder cannot count, and the framing the
// API adds around what it can.
const (
	// ImageTokens is charged per image block. Anthropic bills an image at
	// about width×height/750 tokens and scales images down to about 1.15
	// megapixels, so ~1600 is the cost of a full-size image and an upper
	// estimate for smaller ones.
	ImageTokens = 1600
	// DocumentTokens is charged per PDF (or other binary) document block;
	// a PDF page costs roughly 1500–3000 tokens and the page count is not
	// known without parsing the file. Plain-text documents are counted.
	DocumentTokens = 3000
	// MessageOverhead is added per message for the role and turn markers.
	MessageOverhead = 4
	// RequestOverhead is added once per request.
	RequestOverhead = 4
	// ToolsOverhead is added when the request defines tools: the API then
	// adds a tool-use system prompt of about 350 tokens.
	ToolsOverhead = 346
)

// request is the part of a Messages or count_tokens body that costs input
// tokens.
type request struct {
	System   json.RawMessage   `json:"system"`
	Messages []message         `json:"messages"`
	Tools    []json.RawMessage `json:"tools"`
}

type message struct {
	Content json.RawMessage `json:"content"`
}

// block is any content block; each type uses a few of the fields.
type block struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`     // text
	Thinking string          `json:"thinking"` // thinking
	Name     string          `json:"name"`     // tool_use
	Input    json.RawMessage `json:"input"`    // tool_use
	Content  json.RawMessage `json:"content"`  // tool_result, search_result: string or blocks
	Title    string          `json:"title"`    // document, search_result
	Context  string          `json:"context"`  // document
	Source   *struct {
		Type    string          `json:"type"`    // base64, url, file, text, content
		Data    json.RawMessage `json:"data"`    // text: the document's text
		Content json.RawMessage `json:"content"` // content: blocks
	} `json:"source"` // image, document
	size int // length of the block's JSON
}

func (b *block) UnmarshalJSON(data []byte) error {
	type plain block // without this method
	b.size = len(data)
	return json.Unmarshal(data, (*plain)(b))
}

type tool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// estimate gathers the text of a request to count it in one pass, plus the
// tokens estimated without the encoder.
type estimate struct {
	text  strings.Builder
	fixed int64 // tokens from fixed figures and overheads
	bytes int64 // bytes of JSON estimated by length only
}

// EstimateRequest estimates the input tokens of a Messages or count_tokens
// request body: the text of system, of every message's content blocks (text,
// thinking, tool_use input, tool_result content, text documents, search
// results) and of the tool definitions, plus the overheads above. Images
// and binary documents count their fixed figures; block types it does not
// know count by JSON length (EstimateBytes). A body that is not JSON counts
// by its length. Text beyond 256 KiB is estimated from an even sample of it,
// which bounds the time a huge body can take. The result undercounts Claude
// (see the package documentation).
func (c *Counter) EstimateRequest(body []byte) int64 {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return EstimateBytes(int64(len(body)))
	}
	var e estimate
	e.fixed = RequestOverhead
	e.content(req.System)
	for _, m := range req.Messages {
		e.fixed += MessageOverhead
		e.content(m.Content)
	}
	if len(req.Tools) > 0 {
		e.fixed += ToolsOverhead
	}
	for _, raw := range req.Tools {
		e.tool(raw)
	}
	return c.estimateText(e.text.String()) + e.fixed + EstimateBytes(e.bytes)
}

// add appends one piece of text; pieces are separated by a newline, about
// what the API puts between them.
func (e *estimate) add(s string) {
	if s == "" {
		return
	}
	if e.text.Len() > 0 {
		e.text.WriteByte('\n')
	}
	e.text.WriteString(s)
}

// addJSON appends a JSON value (a tool input or schema) in compact form,
// as the model sees it rather than as the client indented it.
func (e *estimate) addJSON(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		e.add(string(raw))
		return
	}
	e.add(buf.String())
}

// content handles a string or an array of content blocks.
func (e *estimate) content(raw json.RawMessage) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			e.add(s)
		}
	case '[':
		var blocks []block
		if json.Unmarshal(raw, &blocks) != nil {
			e.bytes += int64(len(raw))
			return
		}
		for i := range blocks {
			e.block(&blocks[i])
		}
	}
}

func (e *estimate) block(b *block) {
	switch b.Type {
	case "text":
		e.add(b.Text)
	case "thinking":
		e.add(b.Thinking)
	case "redacted_thinking":
		// Encrypted reasoning; the API does not bill earlier turns'
		// thinking as input, and the ciphertext says nothing about size.
	case "tool_use", "server_tool_use", "mcp_tool_use":
		e.add(b.Name)
		e.addJSON(b.Input)
	case "tool_result", "mcp_tool_result":
		e.content(b.Content)
	case "search_result":
		e.add(b.Title)
		e.content(b.Content)
	case "image":
		e.fixed += ImageTokens
	case "document":
		e.add(b.Title)
		e.add(b.Context)
		switch src := b.Source; {
		case src != nil && src.Type == "text":
			var s string
			if json.Unmarshal(src.Data, &s) == nil {
				e.add(s)
			}
		case src != nil && src.Type == "content":
			e.content(src.Content)
		default:
			e.fixed += DocumentTokens
		}
	default:
		// web_search_tool_result and friends: their (partly encrypted)
		// content is billed as input, and its length is the best guide.
		e.bytes += int64(b.size)
	}
}

func (e *estimate) tool(raw json.RawMessage) {
	var t tool
	if json.Unmarshal(raw, &t) != nil {
		e.bytes += int64(len(raw))
		return
	}
	if t.Type == "" || t.Type == "custom" {
		e.add(t.Name)
		e.add(t.Description)
		e.addJSON(t.InputSchema)
		return
	}
	// A server or Anthropic-defined tool (web_search_…, bash_…,
	// text_editor_…): the API expands it into a definition we do not
	// know; its own JSON is the best available guide.
	e.addJSON(raw)
}
