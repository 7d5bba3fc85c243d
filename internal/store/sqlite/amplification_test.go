package sqlite

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// walFrames reads the WAL file at path and returns, for each valid frame in order, its page
// number, and for each commit frame its index in that list.
func walFrames(t testing.TB, path string) (pages []uint32, commits []int, pageSize int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, 32)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatalf("WAL header: %v", err)
	}
	pageSize = int(binary.BigEndian.Uint32(hdr[8:]))
	salt := hdr[16:24]
	fh, page := make([]byte, 24), make([]byte, pageSize)
	for {
		if _, err := io.ReadFull(r, fh); err != nil {
			break
		}
		if _, err := io.ReadFull(r, page); err != nil {
			break
		}
		if string(fh[8:16]) != string(salt) {
			break // left over from before a restart
		}
		pages = append(pages, binary.BigEndian.Uint32(fh[0:]))
		if binary.BigEndian.Uint32(fh[4:]) != 0 {
			commits = append(commits, len(pages)-1)
		}
	}
	return pages, commits, pageSize
}

// TestWriteAmplification measures what a busy server's appends write to the WAL, and where it
// goes: batches of messages, each in a different one of 100 conversations that hold 200
// messages each already. `parley bench rate --pairs 100` makes batches of about 10 messages
// at 5,000 msg/s and 20 at 10,000. Nothing is checkpointed meanwhile, so the WAL holds every
// frame written; dbstat names the b-tree each page belongs to. Run with -v for the tables
// (docs/benchmarks.md, "Sustained load"). It fails if a message costs more than maxPerMsg of
// WAL: a regression guard, since a schema or page-size change that makes every message
// dirty another page shows here first.
func TestWriteAmplification(t *testing.T) {
	const convs, backlog, batches = 100, 200, 300
	for _, tc := range []struct {
		batch     int
		maxPerMsg float64 // bytes of WAL: ≈ 2,770 and 2,270 measured; 9,300 and 8,060 before 0004 and 1 KiB pages
	}{
		{10, 3400},
		{20, 2800},
	} {
		t.Run(fmt.Sprintf("batch=%d", tc.batch), func(t *testing.T) {
			s, path := openWith(t, Options{WALRestartBytes: 1 << 40, CheckpointInterval: manual, IdleTruncate: manual})
			ids := seedConvs(t, s, convs)
			for i := range backlog * convs / 100 {
				appendSpread(t, s, ids, i*100, 100)
			}
			if _, _, err := walCheckpoint(context.Background(), s.writer, "TRUNCATE"); err != nil {
				t.Fatal(err)
			}
			for i := range batches {
				appendSpread(t, s, ids, i*tc.batch, tc.batch)
			}
			perMsg := walReport(t, s, path, tc.batch)
			if perMsg > tc.maxPerMsg {
				t.Errorf("%.0f bytes of WAL a message, want at most %.0f", perMsg, tc.maxPerMsg)
			}
		})
	}
}

// walReport logs what the WAL at path holds, commit by commit and b-tree by b-tree, and
// returns its bytes a message, for commits of batch messages each.
func walReport(t *testing.T, s *Store, path string, batch int) float64 {
	t.Helper()
	pages, commits, pageSize := walFrames(t, path+"-wal")
	owner := map[uint32]string{}
	rows, err := s.reader.Query(`SELECT name, pageno FROM dbstat`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var pgno uint32
		if err := rows.Scan(&name, &pgno); err != nil {
			t.Fatal(err)
		}
		owner[pgno] = name
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	byTree := map[string]int{}
	for _, p := range pages {
		name := owner[p]
		if name == "" {
			name = "(free)"
		}
		byTree[name]++
	}
	perMsg := float64(len(pages)*(pageSize+24)) / float64(batch*len(commits))
	var b strings.Builder
	fmt.Fprintf(&b, "page size %d: %d commits of %d messages, %.1f frames a commit, %.0f bytes of WAL a message\n",
		pageSize, len(commits), batch, float64(len(pages))/float64(len(commits)), perMsg)
	names := make([]string, 0, len(byTree))
	for n := range byTree {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return byTree[b] - byTree[a] })
	for _, n := range names {
		fmt.Fprintf(&b, "  %-32s %5.2f frames a commit\n", n, float64(byTree[n])/float64(len(commits)))
	}
	t.Log("\n" + b.String())
	return perMsg
}
