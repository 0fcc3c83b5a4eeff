package tokenizer

import "bytes"

// QuickBytesPerToken is the ratio QuickEstimate uses. cl100k averages
// about 4 bytes a token on English and code; Claude's tokenizer counts 15
// to 30 % more tokens for the same text, so 3.2 bytes a token errs on the
// high (safe) side of Claude's count for prose. JSON-dense prompts (large
// tool schemas) come out lower than cl100k counts them (about 0.65× on
// testdata/request.json); the reservation settles to the real usage.
const QuickBytesPerToken = 3.2

// bigBinary is the length from which a string value is taken for base64
// data (an image or a PDF) rather than text.
const bigBinary = 1024

// QuickEstimate estimates a Messages request's input tokens in one pass
// over the raw body, without decoding it or running the encoder: the
// bytes of JSON string values (and of the keys of tool schemas and tool
// inputs) divided by QuickBytesPerToken, a token for each piece of JSON
// punctuation nested in tool schemas and inputs (where the model reads
// JSON), with a base64 "data" value of an image counted as
// ImageTokens and of any other source as DocumentTokens, plus the request
// overheads. It costs about a microsecond per KiB and allocates nothing,
// so the relay can afford it on every request for the reservation that
// settles to the real usage afterwards; EstimateRequest, which runs the
// encoder, is for records the upstream gave no counts for.
func QuickEstimate(body []byte) int64 {
	var textBytes int64
	var punct int64 // JSON punctuation inside tool schemas and inputs, ~1 token each
	var fixed int64 = RequestOverhead
	var lastKey []byte // a slice of body: no allocation
	image := false     // the nearest block "type" seen was "image"
	inObjectKeyPos := false
	depth := 0
	// expectKey tracks whether the next string in an object is a key.
	var stack [64]bool // true: object, false: array
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '{':
			if depth >= 3 {
				punct++
			}
			if depth < len(stack) {
				stack[depth] = true
			}
			depth++
			inObjectKeyPos = true
		case '[':
			if depth < len(stack) {
				stack[depth] = false
			}
			depth++
			inObjectKeyPos = false
		case '}', ']':
			if depth > 0 {
				depth--
			}
			if depth >= 3 {
				punct++
			}
			inObjectKeyPos = false
		case ',':
			if depth >= 4 {
				punct++
			}
			inObjectKeyPos = depth > 0 && depth <= len(stack) && stack[depth-1]
		case ':':
			if depth >= 4 {
				punct++
			}
			inObjectKeyPos = false
		case '"':
			start := i + 1
			j := start
			for j < len(body) && body[j] != '"' {
				if body[j] == '\\' {
					j++
				}
				j++
			}
			if j > len(body) {
				j = len(body)
			}
			s := body[start:j]
			i = j
			if inObjectKeyPos {
				lastKey = s
				if depth >= 4 || !structural(s) {
					// a key of a tool schema or input: the model reads it
					textBytes += int64(len(s))
					punct += 2 // its quotes
				}
				continue
			}
			if depth >= 4 {
				punct += 2
			}
			switch k := string(lastKey); {
			case k == "type":
				switch string(s) {
				case "image":
					image = true
				case "document", "text", "tool_use", "tool_result", "thinking", "search_result":
					image = false
				}
				if string(s) == "tool_use" || string(s) == "tool_result" {
					fixed += MessageOverhead
				}
			case k == "role":
				fixed += MessageOverhead
			case k == "data" && len(s) >= bigBinary:
				if image {
					fixed += ImageTokens
				} else {
					fixed += DocumentTokens
				}
			case k == "model" || k == "media_type" || k == "stop_reason" || k == "user_id" || k == "id" || k == "tool_use_id" || k == "signature":
				// framing and identifiers, not prompt text
			default:
				textBytes += int64(len(s))
			}
		}
	}
	if textBytes > 0 && bytes.Contains(body, []byte(`"tools"`)) {
		fixed += ToolsOverhead
	}
	return fixed + punct + int64(float64(textBytes)/QuickBytesPerToken+0.5)
}

// structural reports whether a key is part of the Messages API's framing
// rather than something the model reads.
func structural(k []byte) bool {
	switch string(k) {
	case "model", "messages", "role", "content", "type", "text", "system", "max_tokens", "stream",
		"metadata", "user_id", "source", "media_type", "data", "id", "tool_use_id", "name", "input",
		"tools", "tool_choice", "thinking", "budget_tokens", "signature", "cache_control",
		"temperature", "top_p", "top_k", "stop_sequences", "description", "input_schema":
		return true
	}
	return false
}
