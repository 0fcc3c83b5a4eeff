package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/relaystation/relay/keys"
)

const keyColumns = `id, name, hash, hint, prev_hash, prev_expires_at, token_limit, tier,
	allowed_models, expires_at, enabled, metadata, created_at, updated_at, last_used_at, deleted_at, limits`

// CreateKey stores k. keys.ErrConflict if the id exists.
func (s *Store) CreateKey(ctx context.Context, k *keys.Key) error {
	args, err := keyArgs(k)
	if err != nil {
		return fmt.Errorf("sqlite: create key %s: %w", k.ID, err)
	}
	// ON CONFLICT DO NOTHING plus a row count reports a duplicate without
	// decoding driver-specific constraint errors.
	res, err := s.write.ExecContext(ctx, `INSERT INTO api_keys (`+keyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: create key %s: %w", k.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: create key %s: %w", k.ID, err)
	} else if n == 0 {
		return fmt.Errorf("create key %s: %w", k.ID, keys.ErrConflict)
	}
	return nil
}

// GetKey returns the key with that id, deleted or not. keys.ErrNotFound if
// none.
func (s *Store) GetKey(ctx context.Context, id string) (*keys.Key, error) {
	row := s.read.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id)
	k, err := scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get key %s: %w", id, keys.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get key %s: %w", id, err)
	}
	return k, nil
}

// ListKeys returns keys ordered by id after f.After; the cursor is the last
// id of the page.
func (s *Store) ListKeys(ctx context.Context, f keys.ListFilter) ([]*keys.Key, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	var w where
	w.add("id > ?", f.After)
	if f.Name != "" {
		// instr, not LIKE: a plain, case-sensitive substring, in which
		// '%' and '_' are ordinary characters.
		w.add("instr(name, ?) > 0", f.Name)
	}
	if f.Enabled != nil {
		w.add("enabled = ?", *f.Enabled)
	}
	if f.Tier != "" {
		w.add("tier = ?", f.Tier)
	}
	if !f.IncludeDeleted {
		w.add("deleted_at IS NULL")
	}
	// One row more than the page tells whether there is a next page.
	q := `SELECT ` + keyColumns + ` FROM api_keys` + w.sql() + ` ORDER BY id LIMIT ?`
	rows, err := s.read.QueryContext(ctx, q, append(w.args, limit+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list keys: %w", err)
	}
	defer rows.Close()
	var out []*keys.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, "", fmt.Errorf("sqlite: list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list keys: %w", err)
	}
	if len(out) > limit {
		out = out[:limit]
		return out, out[limit-1].ID, nil
	}
	return out, "", nil
}

// UpdateKey replaces the stored record of k.ID. keys.ErrNotFound if none.
func (s *Store) UpdateKey(ctx context.Context, k *keys.Key) error {
	args, err := keyArgs(k)
	if err != nil {
		return fmt.Errorf("sqlite: update key %s: %w", k.ID, err)
	}
	res, err := s.write.ExecContext(ctx, `UPDATE api_keys SET
		name = ?2, hash = ?3, hint = ?4, prev_hash = ?5, prev_expires_at = ?6, token_limit = ?7,
		tier = ?8, allowed_models = ?9, expires_at = ?10, enabled = ?11, metadata = ?12,
		created_at = ?13, updated_at = ?14, last_used_at = ?15, deleted_at = ?16, limits = ?17
		WHERE id = ?1`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: update key %s: %w", k.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: update key %s: %w", k.ID, err)
	} else if n == 0 {
		return fmt.Errorf("update key %s: %w", k.ID, keys.ErrNotFound)
	}
	return nil
}

// TouchKeys moves last_used_at forward in one transaction; it never moves
// it back, because batches from several relay instances may arrive in any
// order. Unknown ids are ignored.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE api_keys SET last_used_at = ?1
			WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		// Sorted ids give every writer the same row order; irrelevant with
		// SQLite's single writer, it keeps the statement portable to
		// engines with row locks, where random order can deadlock.
		for _, id := range slices.Sorted(maps.Keys(lastUsed)) {
			if _, err := stmt.ExecContext(ctx, toMicros(lastUsed[id]), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: touch keys: %w", err)
	}
	return nil
}

// keyArgs is k in keyColumns order.
func keyArgs(k *keys.Key) ([]any, error) {
	models, err := jsonOrNull(len(k.AllowedModels) == 0, k.AllowedModels)
	if err != nil {
		return nil, err
	}
	meta, err := jsonOrNull(len(k.Metadata) == 0, k.Metadata)
	if err != nil {
		return nil, err
	}
	limits, err := jsonOrNull(len(k.Limits) == 0, k.Limits)
	if err != nil {
		return nil, err
	}
	return []any{
		k.ID, k.Name, blobOrNull(k.Hash), k.Hint, blobOrNull(k.PrevHash), toNullMicros(k.PrevExpiresAt),
		k.TokenLimit, k.Tier, models, toNullMicros(k.ExpiresAt), k.Enabled, meta,
		toMicros(k.CreatedAt), toMicros(k.UpdatedAt), toNullMicros(k.LastUsedAt), toNullMicros(k.DeletedAt), limits,
	}, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner) (*keys.Key, error) {
	var (
		k                               keys.Key
		prevExp, exp, lastUsed, deleted sql.NullInt64
		models, meta, limits            sql.NullString
		created, updated                int64
	)
	err := row.Scan(&k.ID, &k.Name, &k.Hash, &k.Hint, &k.PrevHash, &prevExp, &k.TokenLimit, &k.Tier,
		&models, &exp, &k.Enabled, &meta, &created, &updated, &lastUsed, &deleted, &limits)
	if err != nil {
		return nil, err
	}
	if models.Valid {
		if err := json.Unmarshal([]byte(models.String), &k.AllowedModels); err != nil {
			return nil, fmt.Errorf("key %s: allowed_models: %w", k.ID, err)
		}
	}
	if meta.Valid {
		if err := json.Unmarshal([]byte(meta.String), &k.Metadata); err != nil {
			return nil, fmt.Errorf("key %s: metadata: %w", k.ID, err)
		}
	}
	if limits.Valid {
		if err := json.Unmarshal([]byte(limits.String), &k.Limits); err != nil {
			return nil, fmt.Errorf("key %s: limits: %w", k.ID, err)
		}
	}
	k.PrevExpiresAt = fromNullMicros(prevExp)
	k.ExpiresAt = fromNullMicros(exp)
	k.CreatedAt = fromMicros(created)
	k.UpdatedAt = fromMicros(updated)
	k.LastUsedAt = fromNullMicros(lastUsed)
	k.DeletedAt = fromNullMicros(deleted)
	return &k, nil
}

// jsonOrNull stores empty collections as NULL, so "none" has one spelling.
func jsonOrNull(empty bool, v any) (sql.NullString, error) {
	if empty {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return sql.NullString{}, err
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

func blobOrNull(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// where accumulates AND-ed conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
