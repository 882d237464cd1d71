package ledger

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// WriteJSONL exports entries as JSON lines, one entry a line.
func WriteJSONL(w io.Writer, entries []Entry) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range entries {
		if err := enc.Encode(&entries[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadJSONL reads an export; a line that is not a well-formed entry is
// reported as a *Problem naming it (Index is the line's position).
func ReadJSONL(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for i := 0; sc.Scan(); i++ {
		line := sc.Bytes()
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var e Entry
		if err := dec.Decode(&e); err != nil {
			return nil, &Problem{Index: i, Seq: uint64(i), Why: fmt.Sprintf("line %d is not a ledger entry: %v", i+1, err)}
		}
		if dec.More() {
			return nil, &Problem{Index: i, Seq: uint64(i), Why: fmt.Sprintf("line %d has more than one entry", i+1)}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
