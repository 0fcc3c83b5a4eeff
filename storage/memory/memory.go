// Package memory keeps every relay store in process memory: keys and usage
// records. It is for tests, examples and ephemeral relays; nothing survives
// a restart. It passes the same conformance suites (storage/storagetest) as
// the durable backends, so code tested against it behaves the same on
// SQLite or Postgres, down to microsecond times and list order.
package memory

import (
	"sync"
	"time"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

var (
	_ keys.Store  = (*Store)(nil)
	_ usage.Store = (*Store)(nil)
)

// Store implements keys.Store and usage.Store. It is safe for concurrent
// use. Records go in and come out as copies, so a caller can never change
// what is stored except through the Store's methods.
//
// Keys and usage have separate locks: the request path touches keys and
// inserts usage at the same time, and neither should wait for the other.
type Store struct {
	keysMu sync.RWMutex
	keys   map[string]*keys.Key
	ids    []string // every key id, sorted, so ListKeys pages without sorting

	usageMu sync.RWMutex
	seen    map[string]struct{} // stored RequestIDs
	// all holds every record ordered by (Time, RequestID); byKey and byModel
	// hold the same pointers per key and per model. Totals and ListRecords
	// pick the narrowest of them and binary-search the time bounds, so a
	// query costs the records in its range, not every record.
	all     []*usage.Record
	byKey   map[string][]*usage.Record
	byModel map[string][]*usage.Record
	// daily is the rollup per UTC day, key and model that Prune keeps.
	daily map[dayKey]*usage.Totals
}

// dayKey identifies a rollup row.
type dayKey struct {
	day   int64 // unix microseconds of the UTC midnight
	key   string
	model string
}

// New returns an empty Store.
func New() *Store {
	return &Store{
		keys:    make(map[string]*keys.Key),
		seen:    make(map[string]struct{}),
		byKey:   make(map[string][]*usage.Record),
		byModel: make(map[string][]*usage.Record),
		daily:   make(map[dayKey]*usage.Totals),
	}
}

// defaultLimit is the page size when a caller asks for none, as
// keys.ListFilter documents.
const defaultLimit = 100

// storedTime is t as every relay store keeps it: microseconds (what Postgres
// timestamptz holds), UTC, no monotonic reading.
func storedTime(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

func storedTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := storedTime(*t)
	return &v
}
