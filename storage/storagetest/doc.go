// Package storagetest holds the conformance suites every storage backend of
// the relay must pass, so that memory, SQLite and Postgres behave the same
// and a test written against one backend says something about all of them.
//
// A backend's test calls the suites with a constructor that returns a new,
// empty store; the suites run their subtests in parallel, so the
// constructor must be safe to call concurrently and register its own
// cleanup with t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		storagetest.TestKeysStore(t, func(t *testing.T) keys.Store { return memory.New() })
//		storagetest.TestUsageStore(t, func(t *testing.T) usage.Store { return memory.New() })
//	}
//
// Contract details the interfaces leave open, which these suites pin down:
//
//   - Times are stored with microsecond precision (truncated, never rounded)
//     and come back in UTC. Microseconds are what Postgres timestamptz
//     keeps, so every backend settles on them; UTC makes records compare
//     and print the same whatever the host's zone.
//   - Empty and nil are the same for slices, maps and byte slices
//     (AllowedModels, Metadata, Limits, Hash, PrevHash): a backend may return
//     either.
//   - ListKeys.Name is a case-sensitive substring match (portable across
//     engines, whose case folding differs); ids order bytewise (Postgres
//     needs COLLATE "C").
//   - A ListKeys or ListRecords page is empty only when nothing matches at
//     all: the cursor is "" as soon as the last match has been returned,
//     never followed by an empty page.
//   - ListRecords with limit <= 0 returns up to 100, like ListFilter.Limit.
//     An unparseable cursor is an error.
//   - TouchKeys never moves LastUsedAt backwards (batches from several
//     instances may arrive out of order) and changes nothing else.
//   - InsertRecords keeps the first record stored under a RequestID, also
//     within one batch; later ones are dropped, not merged.
//   - Totals.Errors counts records with Status >= 400, client-closed (499)
//     included; Totals.Usage.ServiceTier is "".
//   - Filter bounds compare against the stored (microsecond) time: From is
//     inclusive, To exclusive, exactly, even when a bound has nanoseconds.
//   - Reports (and Totals) read the daily rollup for whole UTC days and the
//     records for partial days; rollup and records must agree, and a
//     replayed record must count in neither.
//   - Prune rounds its bound down to a UTC midnight and keeps the rollup:
//     after it, whole-day reports are unchanged, while hour reports and
//     partial days over the pruned range find no records.
package storagetest
