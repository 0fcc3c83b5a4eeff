package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
)

// Bounds on key fields. They keep one record small and a typo (a pasted
// file as a name) from being stored.
const (
	maxNameLen       = 200 // characters
	maxTierLen       = 64
	maxModels        = 100
	maxModelLen      = 200
	maxMetadata      = 50
	maxMetaKeyLen    = 64
	maxMetaValueLen  = 1024
	maxListLimit     = 1000
	maxGracePeriod   = 30 * 24 * time.Hour
	maxGraceSeconds  = int64(maxGracePeriod / time.Second)
	keyNotFoundError = "api key not found"
)

// KeyView is a key as the admin API shows it: never its hash, and its
// plaintext only in the answers to create and rotate. Absent values are
// null (times) or empty, never missing, so clients see one shape.
type KeyView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Hint string `json:"hint"`
	// Key is the plaintext key, present only right after create and
	// rotate: the relay cannot show it again.
	Key           string   `json:"key,omitempty"`
	TokenLimit    int64    `json:"token_limit"`
	Tier          string   `json:"tier"`
	AllowedModels []string `json:"allowed_models"`
	// Limits overrides the tier's limits for this key, by limit name.
	Limits     map[string]int64  `json:"limits"`
	ExpiresAt  *time.Time        `json:"expires_at"`
	Enabled    bool              `json:"enabled"`
	Metadata   map[string]string `json:"metadata"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	LastUsedAt *time.Time        `json:"last_used_at"`
	DeletedAt  *time.Time        `json:"deleted_at"`
	// Standing is the key's current standing against its limits (GET of
	// one key, when the relay shares it).
	Standing *quota.Standing `json:"standing,omitempty"`
}

// KeyPage is one page of GET /admin/api-keys.
type KeyPage struct {
	Data []KeyView `json:"data"`
	// NextCursor is the cursor parameter of the next page; null on the last.
	NextCursor *string `json:"next_cursor"`
	HasMore    bool    `json:"has_more"`
}

func viewOf(k *keys.Key) KeyView {
	v := KeyView{
		ID:            k.ID,
		Name:          k.Name,
		Hint:          k.Hint,
		TokenLimit:    k.TokenLimit,
		Tier:          k.Tier,
		AllowedModels: append([]string{}, k.AllowedModels...),
		ExpiresAt:     utc(k.ExpiresAt),
		Enabled:       k.Enabled,
		Metadata:      make(map[string]string, len(k.Metadata)),
		Limits:        make(map[string]int64, len(k.Limits)),
		CreatedAt:     k.CreatedAt.UTC(),
		UpdatedAt:     k.UpdatedAt.UTC(),
		LastUsedAt:    utc(k.LastUsedAt),
		DeletedAt:     utc(k.DeletedAt),
	}
	for a, b := range k.Metadata {
		v.Metadata[a] = b
	}
	for a, b := range k.Limits {
		v.Limits[a] = b
	}
	return v
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// keyError maps what a KeyService returns to an answer; the one place
// where keys errors become statuses for this API.
func keyError(err error) *apierror.Error {
	return apierror.From(err, func(err error) *apierror.Error {
		switch {
		case errors.Is(err, keys.ErrNotFound):
			return apierror.New(http.StatusNotFound, keyNotFoundError)
		case errors.Is(err, keys.ErrConflict):
			return apierror.New(http.StatusConflict, "api key already exists")
		case errors.Is(err, keys.ErrInvalidParams):
			_, msg, _ := strings.Cut(err.Error(), keys.ErrInvalidParams.Error()+": ")
			if msg == "" {
				msg = "invalid parameters"
			}
			return apierror.New(http.StatusBadRequest, msg)
		case errors.Is(err, context.Canceled):
			return apierror.New(http.StatusServiceUnavailable, "request canceled")
		}
		return nil
	})
}

// fail answers a KeyService error, logging the ones that are the relay's
// fault.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := keyError(err)
	if e.Status >= 500 {
		h.log.LogAttrs(r.Context(), slog.LevelError, "admin key operation failed",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())),
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	}
	h.writeError(w, r, e)
}

// audit logs a key change with who made it.
func (h *Handler) audit(r *http.Request, msg, keyID string) {
	h.log.LogAttrs(r.Context(), slog.LevelInfo, msg,
		slog.String("request_id", middleware.RequestIDFrom(r.Context())),
		slog.String("admin", User(r.Context())), slog.String("key_id", keyID))
}

// createRequest is the body of POST /admin/api-keys.
type createRequest struct {
	Name          *string           `json:"name"`
	TokenLimit    *int64            `json:"token_limit"`
	Tier          *string           `json:"tier"`
	AllowedModels []string          `json:"allowed_models"`
	ExpiresAt     *string           `json:"expires_at"`
	Enabled       *bool             `json:"enabled"`
	Metadata      map[string]string `json:"metadata"`
	Limits        map[string]int64  `json:"limits"`
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if e := decodeBody(w, r, &req, false); e != nil {
		h.writeError(w, r, e)
		return
	}
	now := h.now()
	var p keys.CreateParams
	if req.Name == nil {
		h.writeError(w, r, fieldError("name", "required"))
		return
	}
	p.Name = *req.Name
	e := checkName(p.Name)
	if e == nil && req.TokenLimit != nil {
		p.TokenLimit = *req.TokenLimit
		e = checkTokenLimit(p.TokenLimit)
	}
	if e == nil && req.Tier != nil {
		p.Tier = *req.Tier
		e = checkTier(p.Tier)
		if e == nil {
			e = h.checkKnownTier(p.Tier)
		}
	}
	if e == nil && req.Limits != nil {
		p.Limits = req.Limits
		e = checkLimits(p.Limits)
	}
	if e == nil {
		p.AllowedModels = req.AllowedModels
		e = checkModels(p.AllowedModels)
	}
	if e == nil && req.ExpiresAt != nil {
		p.ExpiresAt, e = parseExpiry(*req.ExpiresAt, now)
	}
	if e == nil {
		p.Metadata = req.Metadata
		e = checkMetadata(p.Metadata)
	}
	if e != nil {
		h.writeError(w, r, e)
		return
	}
	p.Disabled = req.Enabled != nil && !*req.Enabled
	k, plain, err := h.keys.Create(r.Context(), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "admin: api key created", k.ID)
	v := viewOf(k)
	v.Key = plain
	writeJSON(w, http.StatusCreated, v)
}

// listParams are the query parameters GET /admin/api-keys understands.
var listParams = []string{"name", "enabled", "tier", "cursor", "limit", "include_deleted"}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := onlyParams(q, listParams...); e != nil {
		h.writeError(w, r, e)
		return
	}
	f := keys.ListFilter{Name: q.Get("name"), Tier: q.Get("tier"), After: q.Get("cursor")}
	if q.Has("enabled") {
		b, e := boolParam(q, "enabled")
		if e != nil {
			h.writeError(w, r, e)
			return
		}
		f.Enabled = &b
	}
	var e *apierror.Error
	if f.IncludeDeleted, e = boolParam(q, "include_deleted"); e != nil {
		h.writeError(w, r, e)
		return
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxListLimit {
			h.writeError(w, r, fieldError("limit", "must be an integer from 1 to %d", maxListLimit))
			return
		}
		f.Limit = n
	}
	ks, next, err := h.keys.List(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	page := KeyPage{Data: make([]KeyView, 0, len(ks)), HasMore: next != ""}
	for _, k := range ks {
		page.Data = append(page.Data, viewOf(k))
	}
	if next != "" {
		page.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, page)
}

// getKey answers one key. A deleted key is 404, as it is to PATCH, DELETE
// and rotate, unless ?include_deleted=true asks for it (its record stays so
// that usage history keeps a name).
func (h *Handler) getKey(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := onlyParams(q, "include_deleted"); e != nil {
		h.writeError(w, r, e)
		return
	}
	withDeleted, e := boolParam(q, "include_deleted")
	if e != nil {
		h.writeError(w, r, e)
		return
	}
	k, err := h.keys.Get(r.Context(), r.PathValue("id"))
	if err == nil && k.DeletedAt != nil && !withDeleted {
		err = keys.ErrNotFound
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v := viewOf(k)
	if h.limits != nil && k.DeletedAt == nil {
		if st, err := h.limits.Standing(r.Context(), k); err == nil {
			v.Standing = &st
		} else {
			h.log.Warn("admin: key standing unavailable", "key_id", k.ID, "error", err)
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// patchRequest is the body of PATCH /admin/api-keys/{id}. Raw fields tell
// an absent field (leave alone) from null (clear).
type patchRequest struct {
	Name          json.RawMessage `json:"name"`
	TokenLimit    json.RawMessage `json:"token_limit"`
	Tier          json.RawMessage `json:"tier"`
	AllowedModels json.RawMessage `json:"allowed_models"`
	ExpiresAt     json.RawMessage `json:"expires_at"`
	Enabled       json.RawMessage `json:"enabled"`
	Metadata      json.RawMessage `json:"metadata"`
	Limits        json.RawMessage `json:"limits"`
}

// patchKey changes the fields present in the body. null clears tier,
// allowed_models (every model allowed), expires_at (never expires) and
// metadata; name, token_limit and enabled cannot be null. metadata is
// replaced as a whole, not merged.
func (h *Handler) patchKey(w http.ResponseWriter, r *http.Request) {
	var req patchRequest
	if e := decodeBody(w, r, &req, false); e != nil {
		h.writeError(w, r, e)
		return
	}
	changes, e := h.patchChanges(req, h.now())
	if e != nil {
		h.writeError(w, r, e)
		return
	}
	id := r.PathValue("id")
	var (
		k   *keys.Key
		err error
	)
	if len(changes) == 0 {
		// Nothing to change: answer the key as it is, without touching
		// updated_at.
		k, err = h.keys.Get(r.Context(), id)
		if err == nil && k.DeletedAt != nil {
			err = keys.ErrNotFound
		}
	} else {
		k, err = h.keys.Update(r.Context(), id, func(k *keys.Key) error {
			for _, c := range changes {
				c(k)
			}
			return nil
		})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(changes) > 0 {
		h.audit(r, "admin: api key updated", k.ID)
	}
	writeJSON(w, http.StatusOK, viewOf(k))
}

// patchChanges validates every present field of req and returns the
// changes to apply, in field order; nothing is applied unless all are valid.
func (h *Handler) patchChanges(req patchRequest, now time.Time) ([]func(*keys.Key), *apierror.Error) {
	var changes []func(*keys.Key)
	if req.Name != nil {
		var s string
		e := decodeField(req.Name, "name", false, &s)
		if e == nil {
			e = checkName(s)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.Name = s })
	}
	if req.TokenLimit != nil {
		var n int64
		e := decodeField(req.TokenLimit, "token_limit", false, &n)
		if e == nil {
			e = checkTokenLimit(n)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.TokenLimit = n })
	}
	if req.Tier != nil {
		var s string
		e := decodeField(req.Tier, "tier", true, &s)
		if e == nil {
			e = checkTier(s)
		}
		if e == nil {
			e = h.checkKnownTier(s)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.Tier = s })
	}
	if req.AllowedModels != nil {
		var ms []string
		e := decodeField(req.AllowedModels, "allowed_models", true, &ms)
		if e == nil {
			e = checkModels(ms)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.AllowedModels = ms })
	}
	if req.ExpiresAt != nil {
		var s *string
		e := decodeField(req.ExpiresAt, "expires_at", true, &s)
		var t *time.Time
		if e == nil && s != nil {
			t, e = parseExpiry(*s, now)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.ExpiresAt = t })
	}
	if req.Enabled != nil {
		var b bool
		if e := decodeField(req.Enabled, "enabled", false, &b); e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.Enabled = b })
	}
	if req.Limits != nil {
		var m map[string]int64
		e := decodeField(req.Limits, "limits", true, &m)
		if e == nil {
			e = checkLimits(m)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.Limits = m })
	}
	if req.Metadata != nil {
		var m map[string]string
		e := decodeField(req.Metadata, "metadata", true, &m)
		if e == nil {
			e = checkMetadata(m)
		}
		if e != nil {
			return nil, e
		}
		changes = append(changes, func(k *keys.Key) { k.Metadata = m })
	}
	return changes, nil
}

// decodeField decodes one present PATCH field into dst. null leaves dst
// zero when nullable and is an error otherwise.
func decodeField(raw json.RawMessage, name string, nullable bool, dst any) *apierror.Error {
	if string(raw) == "null" {
		if nullable {
			return nil
		}
		return fieldError(name, "must not be null")
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			if typ.Field != "" {
				return fieldError(name+"."+typ.Field, "expected %s, got %s", jsonKind(typ.Type), typ.Value)
			}
			return fieldError(name, "expected %s, got %s", jsonKind(typ.Type), typ.Value)
		}
		return fieldError(name, "invalid value")
	}
	return nil
}

func (h *Handler) deleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.keys.Delete(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "admin: api key deleted", id)
	w.WriteHeader(http.StatusNoContent)
}

// rotateRequest is the optional body of POST /admin/api-keys/{id}/rotate.
type rotateRequest struct {
	// GracePeriodSeconds keeps the old secret working this long, so that
	// clients can be moved to the new one without an outage. Zero or
	// absent: the old secret stops working at once.
	GracePeriodSeconds *int64 `json:"grace_period_seconds"`
}

func (h *Handler) rotateKey(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if e := decodeBody(w, r, &req, true); e != nil {
		h.writeError(w, r, e)
		return
	}
	var grace time.Duration
	if req.GracePeriodSeconds != nil {
		n := *req.GracePeriodSeconds
		if n < 0 || n > maxGraceSeconds {
			h.writeError(w, r, fieldError("grace_period_seconds", "must be from 0 to %d (30 days)", maxGraceSeconds))
			return
		}
		grace = time.Duration(n) * time.Second
	}
	k, plain, err := h.keys.Rotate(r.Context(), r.PathValue("id"), grace)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "admin: api key rotated", k.ID)
	v := viewOf(k)
	v.Key = plain
	writeJSON(w, http.StatusOK, v)
}

func checkName(s string) *apierror.Error {
	switch {
	case strings.TrimSpace(s) == "":
		return fieldError("name", "must not be empty")
	case utf8.RuneCountInString(s) > maxNameLen:
		return fieldError("name", "must be at most %d characters", maxNameLen)
	}
	return nil
}

func checkTokenLimit(n int64) *apierror.Error {
	if n < 0 {
		return fieldError("token_limit", "must not be negative (0 means unlimited)")
	}
	return nil
}

func checkTier(s string) *apierror.Error {
	if len(s) > maxTierLen {
		return fieldError("tier", "must be at most %d bytes", maxTierLen)
	}
	return nil
}

// checkModels accepts exact model names and path.Match globs such as
// "claude-sonnet-4-5*"; a malformed glob would otherwise never match and
// silently lock the key out.
func checkModels(ms []string) *apierror.Error {
	if len(ms) > maxModels {
		return fieldError("allowed_models", "must have at most %d entries", maxModels)
	}
	for i, m := range ms {
		field := fmt.Sprintf("allowed_models[%d]", i)
		switch {
		case strings.TrimSpace(m) == "":
			return fieldError(field, "must not be empty")
		case len(m) > maxModelLen:
			return fieldError(field, "must be at most %d bytes", maxModelLen)
		}
		if _, err := path.Match(m, ""); err != nil {
			return fieldError(field, "%q is not a valid pattern (path.Match syntax: *, ?, [a-z])", m)
		}
	}
	return nil
}

func checkMetadata(m map[string]string) *apierror.Error {
	if len(m) > maxMetadata {
		return fieldError("metadata", "must have at most %d entries", maxMetadata)
	}
	for k, v := range m {
		switch {
		case k == "":
			return fieldError("metadata", "keys must not be empty")
		case len(k) > maxMetaKeyLen:
			return fieldError("metadata", "key %.20q… is longer than %d bytes", k, maxMetaKeyLen)
		case len(v) > maxMetaValueLen:
			return fieldError("metadata."+k, "must be at most %d bytes", maxMetaValueLen)
		}
	}
	return nil
}

// parseExpiry reads an RFC 3339 time that must lie after now.
func parseExpiry(s string, now time.Time) (*time.Time, *apierror.Error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fieldError("expires_at", "must be an RFC 3339 time such as 2030-01-02T15:04:05Z")
	}
	if !t.After(now) {
		return nil, fieldError("expires_at", "must be in the future")
	}
	t = t.UTC()
	return &t, nil
}

// onlyParams refuses query parameters other than allowed, so that a
// misspelt filter (?enable=false) is not silently ignored.
func onlyParams(q map[string][]string, allowed ...string) *apierror.Error {
	for name := range q {
		known := false
		for _, a := range allowed {
			known = known || a == name
		}
		if !known {
			return apierror.New(http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q; known: %s", name, strings.Join(allowed, ", ")))
		}
	}
	return nil
}

// boolParam reads an optional true/false query parameter (absent: false).
func boolParam(q map[string][]string, name string) (bool, *apierror.Error) {
	vs := q[name]
	if len(vs) == 0 {
		return false, nil
	}
	switch vs[0] {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fieldError(name, "must be true or false")
}
