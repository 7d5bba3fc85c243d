package sqlite

import (
	"errors"
	"testing"

	"github.com/parley-chat/parley/internal/store"
)

// FuzzDecodeCursor: a cursor from a client either decodes or is ErrBadCursor (a 400, never a
// 500), and every cursor the store gives out decodes to what it was made from.
func FuzzDecodeCursor(f *testing.F) {
	f.Add("", int64(0), "")
	f.Add("%%%", int64(1), "id")
	f.Add("bm9wZQ", int64(-5), "0192f0a0-0000-7000-8000-000000000001")
	f.Add(store.EncodeListCursor(1733600000000, "c1"), int64(1733600000000), "a:b")
	f.Fuzz(func(t *testing.T, cursor string, ts int64, id string) {
		if _, _, err := store.DecodeListCursor(cursor); err != nil && !errors.Is(err, store.ErrBadCursor) {
			t.Fatalf("store.DecodeListCursor(%q) = %v, want ErrBadCursor", cursor, err)
		}
		gotTS, gotID, err := store.DecodeListCursor(store.EncodeListCursor(ts, id))
		if err != nil || gotTS != ts || gotID != id {
			t.Fatalf("round trip of (%d, %q) = (%d, %q), %v", ts, id, gotTS, gotID, err)
		}
	})
}
