package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/relaystation/relay/internal/apierror"
)

// maxBodyBytes bounds a request body: a key's fields are a few kilobytes
// at most, and nothing the admin API accepts needs more.
const maxBodyBytes = 1 << 20

// decodeBody reads r's body, one JSON object, into dst (a pointer to a
// struct with json tags). Unknown fields are refused by name. With optional,
// an empty body leaves dst alone.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any, optional bool) *apierror.Error {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return nil
		}
		return bodyError(err, dst)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return bodyError(err, dst)
		}
		return apierror.New(http.StatusBadRequest, "request body must hold a single JSON object")
	}
	return nil
}

// bodyError turns a decoding error into a message a person can act on:
// which field, what was expected.
func bodyError(err error, dst any) *apierror.Error {
	var (
		tooBig *http.MaxBytesError
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		return apierror.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		return apierror.New(http.StatusBadRequest, "request body must be a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierror.New(http.StatusBadRequest, "request body is truncated JSON")
	case errors.As(err, &syn):
		return apierror.New(http.StatusBadRequest, fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: ")))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return apierror.New(http.StatusBadRequest, "request body must be a JSON object")
		}
		return fieldError(typ.Field, "expected %s, got %s", jsonKind(typ.Type), typ.Value)
	}
	if name, ok := unknownField(err); ok {
		return apierror.New(http.StatusBadRequest, fmt.Sprintf("unknown field %q; known fields: %s", name, strings.Join(jsonFields(dst), ", ")))
	}
	return apierror.New(http.StatusBadRequest, "request body could not be decoded")
}

// unknownField extracts the name from the error json.Decoder returns for
// an unknown field with DisallowUnknownFields: `json: unknown field "x"`.
// encoding/json has no typed error for it.
func unknownField(err error) (string, bool) {
	_, rest, ok := strings.Cut(err.Error(), "unknown field ")
	if !ok {
		return "", false
	}
	name, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return "", false
	}
	name, err = strconv.Unquote(name)
	return name, err == nil
}

// jsonFields lists the JSON names of the struct dst points to.
func jsonFields(dst any) []string {
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value"
}

// fieldError is a 400 whose message starts with the field it is about.
func fieldError(field, format string, args ...any) *apierror.Error {
	return apierror.New(http.StatusBadRequest, field+": "+fmt.Sprintf(format, args...))
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a programming error gets here; the types written are plain.
		apierror.Write(w, apierror.New(http.StatusInternalServerError, "internal error"), "")
		return
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
