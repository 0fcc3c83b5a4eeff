package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relaystation/relay/keys"
)

// defaultLimit is the page size when a caller asks for none, as
// keys.ListFilter documents; ListRecords follows the same rule.
const defaultLimit = 100

const keyColumns = `id, name, hash, hint, prev_hash, prev_expires_at, token_limit, tier,
	allowed_models, expires_at, enabled, metadata, created_at, updated_at, last_used_at, deleted_at, limits`

// CreateKey stores k. keys.ErrConflict if the id exists.
func (s *Store) CreateKey(ctx context.Context, k *keys.Key) error {
	args, err := keyArgs(k)
	if err != nil {
		return fmt.Errorf("postgres: create key %s: %w", k.ID, err)
	}
	// ON CONFLICT DO NOTHING plus the row count reports a duplicate without
	// an error, so the transaction (and the log) stays clean and no
	// SQLSTATE needs decoding.
	tag, err := s.pool.Exec(ctx, `INSERT INTO api_keys (`+keyColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("postgres: create key %s: %w", k.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("create key %s: %w", k.ID, keys.ErrConflict)
	}
	return nil
}

// GetKey returns the key with that id, deleted or not. keys.ErrNotFound if
// none.
func (s *Store) GetKey(ctx context.Context, id string) (*keys.Key, error) {
	if !validText(id) {
		// No stored id can hold it; asking would be a query error.
		return nil, fmt.Errorf("get key %q: %w", id, keys.ErrNotFound)
	}
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("get key %s: %w", id, keys.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get key %s: %w", id, err)
	}
	return k, nil
}

// ListKeys returns keys ordered by id (bytewise: the column is COLLATE "C")
// after f.After; the cursor is the last id of the page.
func (s *Store) ListKeys(ctx context.Context, f keys.ListFilter) ([]*keys.Key, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	var w where
	if f.After != "" {
		w.add("id > " + w.arg(pgText(f.After)))
	}
	if f.Name != "" {
		// strpos, not LIKE: a plain, case-sensitive substring, in which
		// '%' and '_' are ordinary characters.
		w.add("strpos(name, " + w.arg(pgText(f.Name)) + ") > 0")
	}
	if f.Enabled != nil {
		w.add("enabled = " + w.arg(*f.Enabled))
	}
	if f.Tier != "" {
		w.add("tier = " + w.arg(pgText(f.Tier)))
	}
	if !f.IncludeDeleted {
		w.add("deleted_at IS NULL")
	}
	// One row more than the page tells whether there is a next page.
	cond := w.sql()
	q := `SELECT ` + keyColumns + ` FROM api_keys` + cond + ` ORDER BY id LIMIT ` + w.arg(limit+1)
	rows, err := s.pool.Query(ctx, q, w.args...)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list keys: %w", err)
	}
	defer rows.Close()
	var out []*keys.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, "", fmt.Errorf("postgres: list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("postgres: list keys: %w", err)
	}
	if len(out) > limit {
		out = out[:limit]
		return out, out[limit-1].ID, nil
	}
	return out, "", nil
}

// UpdateKey replaces the stored record of k.ID. keys.ErrNotFound if none.
func (s *Store) UpdateKey(ctx context.Context, k *keys.Key) error {
	if !validText(k.ID) {
		return fmt.Errorf("update key %q: %w", k.ID, keys.ErrNotFound)
	}
	args, err := keyArgs(k)
	if err != nil {
		return fmt.Errorf("postgres: update key %s: %w", k.ID, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET
		name = $2, hash = $3, hint = $4, prev_hash = $5, prev_expires_at = $6, token_limit = $7,
		tier = $8, allowed_models = $9, expires_at = $10, enabled = $11, metadata = $12,
		created_at = $13, updated_at = $14, last_used_at = $15, deleted_at = $16, limits = $17
		WHERE id = $1`, args...)
	if err != nil {
		return fmt.Errorf("postgres: update key %s: %w", k.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update key %s: %w", k.ID, keys.ErrNotFound)
	}
	return nil
}

// touchKeySQL moves last_used_at forward only: batches from several relay
// instances may arrive in any order. Filtering in WHERE rather than
// writing GREATEST(...) leaves rows that would not change untouched, so a
// stale batch writes no new row versions (and no WAL).
const touchKeySQL = `UPDATE api_keys SET last_used_at = $1
	WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`

// TouchKeys records last-use times in one round trip: a pgx.Batch of one
// UPDATE per id, which Postgres runs as one implicit transaction. Unknown
// ids are ignored.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	// Sorted ids make every writer lock rows in the same order; two
	// instances touching overlapping sets in map order could deadlock.
	var b pgx.Batch
	for _, id := range slices.Sorted(maps.Keys(lastUsed)) {
		if validText(id) { // else unknown: no stored id can hold it
			b.Queue(touchKeySQL, dbTime(lastUsed[id]), id)
		}
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("postgres: touch keys: %w", err)
	}
	return nil
}

// keyArgs is k in keyColumns order.
func keyArgs(k *keys.Key) ([]any, error) {
	models, err := jsonOrNull(len(k.AllowedModels) == 0, k.AllowedModels)
	if err != nil {
		return nil, fmt.Errorf("allowed_models: %w", err)
	}
	meta, err := jsonOrNull(len(k.Metadata) == 0, k.Metadata)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	limits, err := jsonOrNull(len(k.Limits) == 0, k.Limits)
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	return []any{
		k.ID, k.Name, bytesOrNull(k.Hash), k.Hint, bytesOrNull(k.PrevHash), dbTimePtr(k.PrevExpiresAt),
		k.TokenLimit, k.Tier, models, dbTimePtr(k.ExpiresAt), k.Enabled, meta,
		dbTime(k.CreatedAt), dbTime(k.UpdatedAt), dbTimePtr(k.LastUsedAt), dbTimePtr(k.DeletedAt), limits,
	}, nil
}

func scanKey(row pgx.Row) (*keys.Key, error) {
	var (
		k                               keys.Key
		prevExp, exp, lastUsed, deleted *time.Time
		models, meta, limits            []byte
	)
	err := row.Scan(&k.ID, &k.Name, &k.Hash, &k.Hint, &k.PrevHash, &prevExp, &k.TokenLimit, &k.Tier,
		&models, &exp, &k.Enabled, &meta, &k.CreatedAt, &k.UpdatedAt, &lastUsed, &deleted, &limits)
	if err != nil {
		return nil, err
	}
	if models != nil {
		if err := json.Unmarshal(models, &k.AllowedModels); err != nil {
			return nil, fmt.Errorf("key %s: allowed_models: %w", k.ID, err)
		}
	}
	if meta != nil {
		if err := json.Unmarshal(meta, &k.Metadata); err != nil {
			return nil, fmt.Errorf("key %s: metadata: %w", k.ID, err)
		}
	}
	if limits != nil {
		if err := json.Unmarshal(limits, &k.Limits); err != nil {
			return nil, fmt.Errorf("key %s: limits: %w", k.ID, err)
		}
	}
	k.PrevExpiresAt = fromDBPtr(prevExp)
	k.ExpiresAt = fromDBPtr(exp)
	k.CreatedAt = k.CreatedAt.UTC()
	k.UpdatedAt = k.UpdatedAt.UTC()
	k.LastUsedAt = fromDBPtr(lastUsed)
	k.DeletedAt = fromDBPtr(deleted)
	return &k, nil
}

// jsonOrNull stores empty collections as NULL, so "none" has one spelling.
// The JSON goes as a string, not []byte: pgx sends a string to a jsonb
// parameter as JSON text in every query mode, whereas []byte would become a
// bytea literal in the simple protocol (as used behind PgBouncer).
func jsonOrNull(empty bool, v any) (any, error) {
	if empty {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// bytesOrNull stores an empty hash as NULL, as storage/sqlite does.
func bytesOrNull(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// where accumulates AND-ed conditions and their arguments. arg appends an
// argument and returns its placeholder, so conditions compose without
// numbering $n by hand.
type where struct {
	conds []string
	args  []any
}

func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

func (w *where) add(cond string) { w.conds = append(w.conds, cond) }

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
