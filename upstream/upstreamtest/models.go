package upstreamtest

import (
	"net/http"
	"strconv"
)

// appendModel appends one model object of the Models API.
func appendModel(dst []byte, id string) []byte {
	dst = append(dst, `{"type":"model","id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"display_name":`...)
	dst = appendString(dst, displayName(id))
	dst = append(dst, `,"created_at":`...)
	dst = appendString(dst, createdAt(id))
	return append(dst, '}')
}

// serveModelList answers GET /v1/models with the real API's cursor
// pagination (limit, after_id, before_id), which the SDKs' auto-pagers
// follow.
func (s *Server) serveModelList(w http.ResponseWriter, r *http.Request, reqID string) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "limit: Input should be between 1 and 1000")
			return
		}
		limit = n
	}
	page, hasMore := s.models, false
	switch after, before := q.Get("after_id"), q.Get("before_id"); {
	case after != "":
		if i := indexOf(page, after); i >= 0 {
			page = page[i+1:]
		} else {
			page = nil
		}
		if len(page) > limit {
			page, hasMore = page[:limit], true
		}
	case before != "":
		i := indexOf(page, before)
		if i < 0 {
			i = 0
		}
		page = page[:i]
		if len(page) > limit {
			page, hasMore = page[len(page)-limit:], true
		}
	default:
		if len(page) > limit {
			page, hasMore = page[:limit], true
		}
	}
	b := []byte(`{"data":[`)
	for i, m := range page {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, s.modelJSON[m]...)
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, hasMore)
	b = append(b, `,"first_id":`...)
	if len(page) > 0 {
		b = appendString(b, page[0])
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"last_id":`...)
	if len(page) > 0 {
		b = appendString(b, page[len(page)-1])
	} else {
		b = append(b, "null"...)
	}
	s.writeJSON(w, append(b, '}'))
}

// serveModel answers GET /v1/models/{id}.
func (s *Server) serveModel(w http.ResponseWriter, reqID, id string) {
	m, ok := s.modelJSON[id]
	if !ok {
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "model: "+id)
		return
	}
	s.writeJSON(w, m)
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
