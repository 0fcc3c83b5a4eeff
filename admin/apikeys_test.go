package admin_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
)

// TestKeyLifecycle drives one key through its whole life over HTTP and
// checks each step where it matters: at keys.Service.Verify, which is what
// the proxy asks.
func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	ctx := t.Context()
	exp := e.clock.Now().Add(30 * 24 * time.Hour)

	// Create.
	v := e.createKey(tok, `{"name":"alice","token_limit":1000000,"tier":"pro","allowed_models":["claude-sonnet-4-5*"],
		"expires_at":"`+exp.Format(time.RFC3339)+`","metadata":{"team":"ml"}}`)
	if !strings.HasPrefix(v.Key, keys.Prefix) || v.Hint != keys.Hint(v.Key) || !strings.HasPrefix(v.Hint, keys.Prefix+v.ID) {
		t.Fatalf("created key %q, hint %q, id %q", v.Key, v.Hint, v.ID)
	}
	switch {
	case v.Name != "alice", v.TokenLimit != 1000000, v.Tier != "pro", !v.Enabled,
		!slices.Equal(v.AllowedModels, []string{"claude-sonnet-4-5*"}), v.Metadata["team"] != "ml",
		v.ExpiresAt == nil || !v.ExpiresAt.Equal(exp), !v.CreatedAt.Equal(e.clock.Now()),
		v.LastUsedAt != nil, v.DeletedAt != nil:
		t.Fatalf("created view %+v", v)
	}
	k, err := e.svc.Verify(ctx, v.Key)
	if err != nil {
		t.Fatalf("Verify of the created key: %v", err)
	}
	if !k.AllowsModel("claude-sonnet-4-5-20250929") || k.AllowsModel("claude-opus-4-1") {
		t.Fatal("allowed_models not applied")
	}

	// Read it back: no plaintext, no hash, every field present.
	rec := e.do(http.MethodGet, "/admin/api-keys/"+v.ID, "", tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	var raw map[string]any
	decode(t, rec, &raw)
	for _, f := range []string{"id", "name", "hint", "token_limit", "tier", "allowed_models", "expires_at", "enabled", "metadata", "created_at", "updated_at", "last_used_at", "deleted_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("GET lacks %q", f)
		}
	}
	for _, f := range []string{"key", "hash", "Hash", "prev_hash"} {
		if _, ok := raw[f]; ok {
			t.Errorf("GET shows %q", f)
		}
	}
	if strings.Contains(rec.Body.String(), v.Key[len(keys.Prefix)+12:len(v.Key)-4]) || strings.Contains(rec.Body.String(), "$2a$") {
		t.Fatalf("GET reveals the secret or its hash: %s", rec.Body)
	}

	// Disable.
	e.clock.Add(time.Minute)
	rec = e.do(http.MethodPatch, "/admin/api-keys/"+v.ID, `{"enabled":false}`, tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("patch: %d %s", rec.Code, rec.Body)
	}
	var pv admin.KeyView
	decode(t, rec, &pv)
	if pv.Enabled || pv.Key != "" || pv.Name != "alice" || pv.Tier != "pro" || !pv.UpdatedAt.Equal(e.clock.Now()) {
		t.Fatalf("patched view %+v", pv)
	}
	if _, err := e.svc.Verify(ctx, v.Key); !errors.Is(err, keys.ErrDisabled) {
		t.Fatalf("Verify after disable: %v, want ErrDisabled", err)
	}
	e.do(http.MethodPatch, "/admin/api-keys/"+v.ID, `{"enabled":true}`, tok)
	if _, err := e.svc.Verify(ctx, v.Key); err != nil {
		t.Fatalf("Verify after enable: %v", err)
	}

	// Rotate without grace: the old secret dies at once.
	rec = e.do(http.MethodPost, "/admin/api-keys/"+v.ID+"/rotate", "", tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", rec.Code, rec.Body)
	}
	var r1 admin.KeyView
	decode(t, rec, &r1)
	if r1.ID != v.ID || r1.Key == v.Key || !strings.HasPrefix(r1.Key, keys.Prefix+v.ID) || r1.Hint != keys.Hint(r1.Key) {
		t.Fatalf("rotated view %+v", r1)
	}
	if _, err := e.svc.Verify(ctx, v.Key); !errors.Is(err, keys.ErrInvalidKey) {
		t.Fatalf("old secret after rotation without grace: %v", err)
	}
	if _, err := e.svc.Verify(ctx, r1.Key); err != nil {
		t.Fatalf("new secret: %v", err)
	}

	// Rotate with grace: the old secret keeps working until it ends.
	rec = e.do(http.MethodPost, "/admin/api-keys/"+v.ID+"/rotate", `{"grace_period_seconds":3600}`, tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("rotate with grace: %d %s", rec.Code, rec.Body)
	}
	var r2 admin.KeyView
	decode(t, rec, &r2)
	for _, key := range []string{r1.Key, r2.Key} {
		if _, err := e.svc.Verify(ctx, key); err != nil {
			t.Fatalf("within the grace period: %v", err)
		}
	}
	e.clock.Add(time.Hour)
	if _, err := e.svc.Verify(ctx, r1.Key); !errors.Is(err, keys.ErrInvalidKey) {
		t.Fatalf("old secret after the grace period: %v", err)
	}
	if _, err := e.svc.Verify(ctx, r2.Key); err != nil {
		t.Fatalf("new secret after the grace period: %v", err)
	}

	// Delete: 204, the key stops verifying, GET is 404 unless asked for.
	tok = e.login() // the first token expired with the hour that passed
	rec = e.do(http.MethodDelete, "/admin/api-keys/"+v.ID, "", tok)
	if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if _, err := e.svc.Verify(ctx, r2.Key); !errors.Is(err, keys.ErrInvalidKey) {
		t.Fatalf("Verify after delete: %v", err)
	}
	wantError(t, e.do(http.MethodGet, "/admin/api-keys/"+v.ID, "", tok), http.StatusNotFound, apierror.NotFound, "not found")
	rec = e.do(http.MethodGet, "/admin/api-keys/"+v.ID+"?include_deleted=true", "", tok)
	var dv admin.KeyView
	decode(t, rec, &dv)
	if rec.Code != http.StatusOK || dv.DeletedAt == nil || dv.Enabled || dv.Name != "alice" {
		t.Fatalf("deleted key with include_deleted: %d %+v", rec.Code, dv)
	}
	for _, req := range [][3]string{
		{http.MethodDelete, "/admin/api-keys/" + v.ID, ""},
		{http.MethodPatch, "/admin/api-keys/" + v.ID, `{"enabled":true}`},
		{http.MethodPatch, "/admin/api-keys/" + v.ID, `{}`},
		{http.MethodPost, "/admin/api-keys/" + v.ID + "/rotate", ""},
	} {
		wantError(t, e.do(req[0], req[1], req[2], tok), http.StatusNotFound, apierror.NotFound)
	}
	if _, err := e.svc.Verify(ctx, r2.Key); !errors.Is(err, keys.ErrInvalidKey) {
		t.Fatal("a deleted key came back")
	}
}

func TestUnknownKey(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	for _, id := range []string{keys.NewID(), "short", "has%20space", strings.Repeat("a", 200)} {
		for _, req := range [][3]string{
			{http.MethodGet, "/admin/api-keys/" + id, ""},
			{http.MethodPatch, "/admin/api-keys/" + id, `{"name":"x"}`},
			{http.MethodDelete, "/admin/api-keys/" + id, ""},
			{http.MethodPost, "/admin/api-keys/" + id + "/rotate", ""},
		} {
			wantError(t, e.do(req[0], req[1], req[2], tok), http.StatusNotFound, apierror.NotFound, "api key not found")
		}
	}
}

func TestPatch(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	exp := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	v := e.createKey(tok, `{"name":"bob","token_limit":5,"tier":"pro","allowed_models":["a*"],"expires_at":"`+exp+`","metadata":{"x":"y"}}`)
	patch := func(body string) admin.KeyView {
		t.Helper()
		rec := e.do(http.MethodPatch, "/admin/api-keys/"+v.ID, body, tok)
		if rec.Code != http.StatusOK {
			t.Fatalf("patch %s: %d %s", body, rec.Code, rec.Body)
		}
		var got admin.KeyView
		decode(t, rec, &got)
		return got
	}

	// An absent field is left alone.
	got := patch(`{"name":"robert"}`)
	if got.Name != "robert" || got.TokenLimit != 5 || got.Tier != "pro" || got.ExpiresAt == nil || len(got.AllowedModels) != 1 || got.Metadata["x"] != "y" {
		t.Fatalf("after name change: %+v", got)
	}
	// An empty patch changes nothing, updated_at included.
	e.clock.Add(time.Minute)
	if again := patch(`{}`); !again.UpdatedAt.Equal(got.UpdatedAt) || again.Name != "robert" {
		t.Fatalf("empty patch changed %+v", again)
	}
	// null clears the clearable fields.
	got = patch(`{"expires_at":null,"tier":null,"allowed_models":null,"metadata":null}`)
	if got.ExpiresAt != nil || got.Tier != "" || len(got.AllowedModels) != 0 || len(got.Metadata) != 0 || got.TokenLimit != 5 {
		t.Fatalf("after clearing: %+v", got)
	}
	if got.AllowedModels == nil || got.Metadata == nil {
		t.Fatal("cleared collections are null, want [] and {}")
	}
	// Every field at once; metadata replaces, it does not merge.
	later := e.clock.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	got = patch(`{"name":"b","token_limit":0,"tier":"free","allowed_models":["claude-haiku-4-5"],"expires_at":"` + later.Format(time.RFC3339) + `","enabled":false,"metadata":{"new":"1"}}`)
	if got.Name != "b" || got.TokenLimit != 0 || got.Tier != "free" || got.AllowedModels[0] != "claude-haiku-4-5" ||
		got.ExpiresAt == nil || !got.ExpiresAt.Equal(later) || got.Enabled || len(got.Metadata) != 1 || got.Metadata["new"] != "1" {
		t.Fatalf("after full patch: %+v", got)
	}
	// The store agrees.
	k, err := e.svc.Get(t.Context(), v.ID)
	if err != nil || k.Name != "b" || k.Enabled || k.Tier != "free" {
		t.Fatalf("stored: %+v %v", k, err)
	}
	// A failed patch changes nothing, not even the valid fields before the bad one.
	rec := e.do(http.MethodPatch, "/admin/api-keys/"+v.ID, `{"name":"partial","token_limit":-1}`, tok)
	wantError(t, rec, http.StatusBadRequest, apierror.InvalidRequest, "token_limit")
	if k, _ := e.svc.Get(t.Context(), v.ID); k.Name != "b" {
		t.Fatalf("a refused patch was half applied: name %q", k.Name)
	}
	// Time zones are accepted and normalised to UTC.
	got = patch(`{"expires_at":"` + later.In(time.FixedZone("", 5*3600)).Format(time.RFC3339) + `"}`)
	if !got.ExpiresAt.Equal(later) || got.ExpiresAt.Location() != time.UTC {
		t.Fatalf("expires_at %v", got.ExpiresAt)
	}
}

func TestListPaginationAndFilters(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	type spec struct{ name, tier string }
	var created []admin.KeyView
	for i, s := range []spec{{"alpha-1", "pro"}, {"alpha-2", "free"}, {"beta-1", "pro"}, {"beta-2", ""}, {"gamma", "pro"}} {
		body := `{"name":"` + s.name + `","tier":"` + s.tier + `","enabled":` + map[bool]string{true: "true", false: "false"}[i%2 == 0] + `}`
		created = append(created, e.createKey(tok, body))
	}
	gone := e.createKey(tok, `{"name":"alpha-deleted","tier":"pro"}`)
	if rec := e.do(http.MethodDelete, "/admin/api-keys/"+gone.ID, "", tok); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}

	list := func(q string) admin.KeyPage {
		t.Helper()
		rec := e.do(http.MethodGet, "/admin/api-keys?"+q, "", tok)
		if rec.Code != http.StatusOK {
			t.Fatalf("list ?%s: %d %s", q, rec.Code, rec.Body)
		}
		var p admin.KeyPage
		decode(t, rec, &p)
		if p.HasMore != (p.NextCursor != nil) {
			t.Fatalf("has_more %v with next_cursor %v", p.HasMore, p.NextCursor)
		}
		for _, v := range p.Data {
			if v.Key != "" {
				t.Fatal("a listed key shows its plaintext")
			}
		}
		return p
	}
	names := func(p admin.KeyPage) []string {
		var out []string
		for _, v := range p.Data {
			out = append(out, v.Name)
		}
		slices.Sort(out)
		return out
	}

	// Walk every page two at a time: each key once, in id order.
	var ids []string
	q := "limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		p := list(q)
		if len(p.Data) > 2 {
			t.Fatalf("page of %d with limit=2", len(p.Data))
		}
		for _, v := range p.Data {
			ids = append(ids, v.ID)
		}
		if !p.HasMore {
			break
		}
		q = "limit=2&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	var want []string
	for _, v := range created {
		want = append(want, v.ID)
	}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("paged ids %v, want %v", ids, want)
	}
	if p := list(""); len(p.Data) != 5 || p.HasMore || p.NextCursor != nil {
		t.Fatalf("one page: %d keys, has_more %v", len(p.Data), p.HasMore)
	}
	// An empty result is [], not null.
	rec := e.do(http.MethodGet, "/admin/api-keys?name=nobody", "", tok)
	if !strings.Contains(rec.Body.String(), `"data":[]`) || !strings.Contains(rec.Body.String(), `"next_cursor":null`) {
		t.Fatalf("empty page %s", rec.Body)
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"name=alpha", []string{"alpha-1", "alpha-2"}},
		{"name=-1", []string{"alpha-1", "beta-1"}},
		{"tier=pro", []string{"alpha-1", "beta-1", "gamma"}},
		{"enabled=true", []string{"alpha-1", "beta-1", "gamma"}},
		{"enabled=false", []string{"alpha-2", "beta-2"}},
		{"enabled=true&tier=pro&name=a", []string{"alpha-1", "beta-1", "gamma"}},
		{"enabled=false&tier=free", []string{"alpha-2"}},
		{"include_deleted=true&name=alpha", []string{"alpha-1", "alpha-2", "alpha-deleted"}},
		{"include_deleted=false&name=alpha", []string{"alpha-1", "alpha-2"}},
		{"name=zzz", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if got := names(list(tt.query)); !slices.Equal(got, tt.want) {
				t.Fatalf("?%s: %v, want %v", tt.query, got, tt.want)
			}
		})
	}
}

func TestUnknownFields(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	v := e.createKey(tok, `{"name":"x"}`)
	tests := []struct {
		method, path, body, field string
	}{
		{http.MethodPost, "/admin/api-keys", `{"name":"x","enabeld":false}`, "enabeld"},
		{http.MethodPost, "/admin/api-keys", `{"name":"x","hash":"$2a$10$..."}`, "hash"},
		{http.MethodPost, "/admin/api-keys", `{"name":"x","id":"AAAAAAAAAAAA"}`, "id"},
		{http.MethodPost, "/admin/api-keys", `{"name":"x","key":"sk-proxy-mine"}`, "key"},
		{http.MethodPost, "/admin/api-keys", `{"name":"x","deleted_at":null}`, "deleted_at"},
		{http.MethodPost, "/admin/api-keys", `{"name":"x","na\"me":1}`, `na\"me`},
		{http.MethodPatch, "/admin/api-keys/" + v.ID, `{"token_limt":5}`, "token_limt"},
		{http.MethodPatch, "/admin/api-keys/" + v.ID, `{"created_at":"2030-01-01T00:00:00Z"}`, "created_at"},
		{http.MethodPost, "/admin/api-keys/" + v.ID + "/rotate", `{"grace_period":60}`, "grace_period"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.field, func(t *testing.T) {
			e := wantError(t, e.do(tt.method, tt.path, tt.body, tok), http.StatusBadRequest, apierror.InvalidRequest, "unknown field")
			if !strings.Contains(e.Error.Message, `"`+tt.field+`"`) {
				t.Fatalf("message %q does not name %q", e.Error.Message, tt.field)
			}
		})
	}
	// Nothing was created or changed by the refused requests.
	if ks, _, _ := e.svc.List(t.Context(), keys.ListFilter{}); len(ks) != 1 || ks[0].Name != "x" {
		t.Fatalf("keys after refused requests: %d", len(ks))
	}
}

func TestInvalidValues(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	v := e.createKey(tok, `{"name":"x"}`)
	now := e.clock.Now()
	past := now.Add(-time.Second).Format(time.RFC3339)
	create, patch, rotate, list := "POST /admin/api-keys", "PATCH /admin/api-keys/"+v.ID, "POST /admin/api-keys/"+v.ID+"/rotate", "GET /admin/api-keys"
	tests := []struct {
		name, route, body string
		status            int
		msg               []string
	}{
		{"create: no name", create, `{"token_limit":1}`, 400, []string{"name", "required"}},
		{"create: null name", create, `{"name":null}`, 400, []string{"name", "required"}},
		{"create: empty name", create, `{"name":""}`, 400, []string{"name", "empty"}},
		{"create: blank name", create, `{"name":"  \t"}`, 400, []string{"name", "empty"}},
		{"create: long name", create, `{"name":"` + strings.Repeat("é", 201) + `"}`, 400, []string{"name", "200"}},
		{"create: name is a number", create, `{"name":42}`, 400, []string{"name", "expected a string", "number"}},
		{"create: negative limit", create, `{"name":"x","token_limit":-1}`, 400, []string{"token_limit", "negative"}},
		{"create: fractional limit", create, `{"name":"x","token_limit":1.5}`, 400, []string{"token_limit", "integer"}},
		{"create: limit as string", create, `{"name":"x","token_limit":"100"}`, 400, []string{"token_limit", "integer"}},
		{"create: limit overflows", create, `{"name":"x","token_limit":99999999999999999999}`, 400, []string{"token_limit"}},
		{"create: long tier", create, `{"name":"x","tier":"` + strings.Repeat("t", 65) + `"}`, 400, []string{"tier"}},
		{"create: bad glob", create, `{"name":"x","allowed_models":["claude-[opus"]}`, 400, []string{"allowed_models[0]", "pattern"}},
		{"create: second glob bad", create, `{"name":"x","allowed_models":["ok","a\\"]}`, 400, []string{"allowed_models[1]"}},
		{"create: empty model", create, `{"name":"x","allowed_models":[""]}`, 400, []string{"allowed_models[0]", "empty"}},
		{"create: models not a list", create, `{"name":"x","allowed_models":"claude"}`, 400, []string{"allowed_models", "array"}},
		{"create: model not a string", create, `{"name":"x","allowed_models":[1]}`, 400, []string{"allowed_models", "string"}},
		{"create: expiry in the past", create, `{"name":"x","expires_at":"` + past + `"}`, 400, []string{"expires_at", "future"}},
		{"create: expiry now", create, `{"name":"x","expires_at":"` + now.Format(time.RFC3339) + `"}`, 400, []string{"expires_at", "future"}},
		{"create: expiry not RFC 3339", create, `{"name":"x","expires_at":"tomorrow"}`, 400, []string{"expires_at", "RFC 3339"}},
		{"create: expiry without zone", create, `{"name":"x","expires_at":"2031-01-01T00:00:00"}`, 400, []string{"expires_at", "RFC 3339"}},
		{"create: expiry as number", create, `{"name":"x","expires_at":1900000000}`, 400, []string{"expires_at", "string"}},
		{"create: enabled as string", create, `{"name":"x","enabled":"no"}`, 400, []string{"enabled", "boolean"}},
		{"create: metadata value number", create, `{"name":"x","metadata":{"a":1}}`, 400, []string{"metadata", "string"}},
		{"create: metadata empty key", create, `{"name":"x","metadata":{"":"v"}}`, 400, []string{"metadata"}},
		{"create: metadata long value", create, `{"name":"x","metadata":{"a":"` + strings.Repeat("v", 1025) + `"}}`, 400, []string{"metadata.a"}},
		{"create: body is an array", create, `[{"name":"x"}]`, 400, []string{"JSON object"}},
		{"create: body is a string", create, `"x"`, 400, []string{"JSON object"}},
		{"create: empty body", create, ``, 400, []string{"JSON object"}},
		{"create: not JSON", create, `name=x`, 400, []string{"not valid JSON"}},
		{"create: truncated", create, `{"name":"x"`, 400, []string{"truncated"}},
		{"create: two objects", create, `{"name":"x"}{"name":"y"}`, 400, []string{"single JSON object"}},
		{"create: trailing garbage", create, `{"name":"x"} x`, 400, []string{"single JSON object"}},
		{"create: too large", create, `{"name":"x","metadata":{"a":"` + strings.Repeat("v", 1<<20) + `"}}`, 413, []string{"exceeds"}},
		{"patch: null name", patch, `{"name":null}`, 400, []string{"name", "null"}},
		{"patch: empty name", patch, `{"name":""}`, 400, []string{"name", "empty"}},
		{"patch: null limit", patch, `{"token_limit":null}`, 400, []string{"token_limit", "null"}},
		{"patch: negative limit", patch, `{"token_limit":-5}`, 400, []string{"token_limit", "negative"}},
		{"patch: null enabled", patch, `{"enabled":null}`, 400, []string{"enabled", "null"}},
		{"patch: enabled as number", patch, `{"enabled":0}`, 400, []string{"enabled", "boolean"}},
		{"patch: expiry in the past", patch, `{"expires_at":"` + past + `"}`, 400, []string{"expires_at", "future"}},
		{"patch: bad glob", patch, `{"allowed_models":["["]}`, 400, []string{"allowed_models[0]"}},
		{"patch: metadata value number", patch, `{"metadata":{"a":true}}`, 400, []string{"metadata", "string"}},
		{"patch: empty body", patch, ``, 400, []string{"JSON object"}},
		{"rotate: negative grace", rotate, `{"grace_period_seconds":-1}`, 400, []string{"grace_period_seconds"}},
		{"rotate: huge grace", rotate, `{"grace_period_seconds":9999999999999}`, 400, []string{"grace_period_seconds"}},
		{"rotate: grace as string", rotate, `{"grace_period_seconds":"60"}`, 400, []string{"grace_period_seconds", "integer"}},
		{"list: enabled=maybe", list + "?enabled=maybe", ``, 400, []string{"enabled"}},
		{"list: include_deleted=yes", list + "?include_deleted=yes", ``, 400, []string{"include_deleted"}},
		{"list: limit=0", list + "?limit=0", ``, 400, []string{"limit"}},
		{"list: limit=abc", list + "?limit=abc", ``, 400, []string{"limit"}},
		{"list: limit too big", list + "?limit=1001", ``, 400, []string{"limit"}},
		{"list: unknown parameter", list + "?enable=false", ``, 400, []string{`"enable"`}},
		{"get: unknown parameter", "GET /admin/api-keys/" + v.ID + "?deleted=1", ``, 400, []string{`"deleted"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, _ := strings.Cut(tt.route, " ")
			typ := apierror.InvalidRequest
			if tt.status == http.StatusRequestEntityTooLarge {
				typ = apierror.RequestTooLarge
			}
			wantError(t, e.do(method, path, tt.body, tok), tt.status, typ, tt.msg...)
		})
	}
	if ks, _, _ := e.svc.List(t.Context(), keys.ListFilter{}); len(ks) != 1 {
		t.Fatalf("%d keys after refused creates", len(ks))
	}
	k, _ := e.svc.Get(t.Context(), v.ID)
	if k.Name != "x" || !k.Enabled || k.PrevHash != nil || !k.UpdatedAt.Equal(v.UpdatedAt) {
		t.Fatalf("a refused request changed the key: %+v", k)
	}
}

func TestCreateDefaults(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	// The request of the original design document, with curl's form content type.
	req := `{"name": "User", "token_limit": 1000000}`
	rec := e.do(http.MethodPost, "/admin/api-keys", req, tok)
	var v admin.KeyView
	decode(t, rec, &v)
	if rec.Code != http.StatusCreated || v.Name != "User" || v.TokenLimit != 1000000 || !v.Enabled ||
		v.Tier != "" || v.ExpiresAt != nil || v.AllowedModels == nil || v.Metadata == nil {
		t.Fatalf("%d %+v", rec.Code, v)
	}
	var raw map[string]json.RawMessage
	decode(t, rec, &raw)
	if string(raw["expires_at"]) != "null" || string(raw["deleted_at"]) != "null" || string(raw["last_used_at"]) != "null" {
		t.Fatalf("absent times are not null: %s", rec.Body)
	}
	if d := e.createKey(tok, `{"name":"off","enabled":false}`); d.Enabled {
		t.Fatal(`"enabled": false ignored`)
	}
	if z := e.createKey(tok, `{"name":"z","tier":null,"allowed_models":null,"expires_at":null,"metadata":null,"token_limit":null}`); z.TokenLimit != 0 || z.ExpiresAt != nil {
		t.Fatalf("nulls on create: %+v", z)
	}
}
