package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

const userCols = `id, username, display_name, created_ts`

func scanUser(sc interface{ Scan(...any) error }) (protocol.User, error) {
	var u protocol.User
	err := sc.Scan(&u.ID, &u.Username, &u.DisplayName, &u.CreatedTS)
	return u, err
}

func scanUsers(rows *sql.Rows) ([]protocol.User, error) {
	defer rows.Close()
	us := []protocol.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	return us, rows.Err()
}

// CreateUser implements store.Users.
func (s *Store) CreateUser(ctx context.Context, u protocol.User, passwordHash string) error {
	const op = "create user"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.wtx(tx).ExecContext(ctx,
			`INSERT INTO users (id, username, display_name, password_hash, created_ts) VALUES (?, ?, ?, ?, ?)`,
			u.ID, u.Username, u.DisplayName, passwordHash, u.CreatedTS)
		return err
	})
	if isConstraint(err) {
		return fmt.Errorf("sqlite: %s %q: %w", op, u.Username, store.ErrConflict)
	}
	return wrap(op, err)
}

// UserByUsername implements store.Users.
func (s *Store) UserByUsername(ctx context.Context, username string) (_ protocol.User, _ string, err error) {
	const op = "user by username"
	if err := s.enterRead(op); err != nil {
		return protocol.User{}, "", err
	}
	defer s.leaveRead(&err)
	var u protocol.User
	var hash string
	err = s.rq().QueryRowContext(ctx,
		`SELECT `+userCols+`, password_hash FROM users WHERE username = ?`, username).
		Scan(&u.ID, &u.Username, &u.DisplayName, &u.CreatedTS, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.User{}, "", fmt.Errorf("sqlite: %s %q: %w", op, username, store.ErrNotFound)
	}
	if err != nil {
		return protocol.User{}, "", wrap(op, err)
	}
	return u, hash, nil
}

// UserByID implements store.Users.
func (s *Store) UserByID(ctx context.Context, id string) (_ protocol.User, err error) {
	const op = "user by id"
	if err := s.enterRead(op); err != nil {
		return protocol.User{}, err
	}
	defer s.leaveRead(&err)
	u, err := scanUser(s.rq().QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.User{}, fmt.Errorf("sqlite: %s %q: %w", op, id, store.ErrNotFound)
	}
	return u, wrap(op, err)
}

// maxParams bounds the ids bound into one IN (...) list, well under SQLite's variable limit.
const maxParams = 500

// UsersByID implements store.Users.
func (s *Store) UsersByID(ctx context.Context, ids []string) (_ []protocol.User, err error) {
	const op = "users by id"
	if err := s.enterRead(op); err != nil {
		return nil, err
	}
	defer s.leaveRead(&err)
	us := []protocol.User{}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxParams)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		// Not through the statement cache: each list length is a query text of its own,
		// up to maxParams of them, and they would take the cache's slots for good.
		rows, err := s.reader.QueryContext(ctx,
			`SELECT `+userCols+` FROM users WHERE id IN (`+placeholders(len(chunk))+`)`, args...)
		if err != nil {
			return nil, wrap(op, err)
		}
		got, err := scanUsers(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		us = append(us, got...)
	}
	return us, nil
}

// placeholders returns "?, ?, ..." with n marks.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// SetDisplayName implements store.Users.
func (s *Store) SetDisplayName(ctx context.Context, id, displayName string) (protocol.User, error) {
	const op = "set display name"
	if err := s.enter(op); err != nil {
		return protocol.User{}, err
	}
	defer s.leave()
	var u protocol.User
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanUser(s.wtx(tx).QueryRowContext(ctx,
			`UPDATE users SET display_name = ? WHERE id = ? RETURNING `+userCols, displayName, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.User{}, fmt.Errorf("sqlite: %s %q: %w", op, id, store.ErrNotFound)
	}
	return u, wrap(op, err)
}

// SearchUsers implements store.Users. The prefix match is a range scan of the username index:
// username >= prefix and below the least string greater than every string with that prefix.
func (s *Store) SearchUsers(ctx context.Context, prefix string, limit int) (_ []protocol.User, err error) {
	const op = "search users"
	if err := s.enterRead(op); err != nil {
		return nil, err
	}
	defer s.leaveRead(&err)
	limit = limitOrDefault(limit)
	var rows *sql.Rows
	if upper, ok := prefixUpperBound(prefix); ok {
		rows, err = s.rq().QueryContext(ctx, `SELECT `+userCols+` FROM users
			WHERE username >= ? AND username < ? ORDER BY username LIMIT ?`, prefix, upper, limit)
	} else {
		rows, err = s.rq().QueryContext(ctx, `SELECT `+userCols+` FROM users
			WHERE username >= ? ORDER BY username LIMIT ?`, prefix, limit)
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	us, err := scanUsers(rows)
	return us, wrap(op, err)
}

// prefixUpperBound returns the least byte string greater than every string starting with
// prefix (SQLite's BINARY collation compares bytes), or false if there is none (the prefix is
// empty or all 0xff bytes).
func prefixUpperBound(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

const deviceCols = `id, user_id, name, refresh_hash, refresh_expires_ts, created_ts, revoked_ts`

// scanDevice scans deviceCols, and then any columns after them into extra.
func scanDevice(sc interface{ Scan(...any) error }, extra ...any) (store.Device, error) {
	var d store.Device
	err := sc.Scan(append([]any{&d.ID, &d.UserID, &d.Name, &d.RefreshHash, &d.RefreshExpiresTS, &d.CreatedTS, &d.RevokedTS}, extra...)...)
	return d, err
}

// CreateDevice implements store.Devices.
func (s *Store) CreateDevice(ctx context.Context, d store.Device) error {
	const op = "create device"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.wtx(tx).ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			d.ID, d.UserID, d.Name, d.RefreshHash, d.RefreshExpiresTS, d.CreatedTS, d.RevokedTS)
		return err
	})
	if isConstraint(err) {
		return fmt.Errorf("sqlite: %s %q: %w", op, d.ID, store.ErrConflict)
	}
	return wrap(op, err)
}

// Device implements store.Devices.
func (s *Store) Device(ctx context.Context, id string) (_ store.Device, err error) {
	const op = "device"
	if err := s.enterRead(op); err != nil {
		return store.Device{}, err
	}
	defer s.leaveRead(&err)
	d, err := scanDevice(s.rq().QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("sqlite: %s %q: %w", op, id, store.ErrNotFound)
	}
	return d, wrap(op, err)
}

// DeviceByRefreshHash implements store.Devices.
func (s *Store) DeviceByRefreshHash(ctx context.Context, hash string) (_ store.Device, err error) {
	const op = "device by refresh hash"
	if err := s.enterRead(op); err != nil {
		return store.Device{}, err
	}
	defer s.leaveRead(&err)
	d, err := scanDevice(s.rq().QueryRowContext(ctx,
		`SELECT `+deviceCols+` FROM devices WHERE refresh_hash = ? AND revoked_ts = 0 LIMIT 1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	return d, wrap(op, err)
}

// RotateRefresh implements store.Devices. The compare-and-swap is one UPDATE on the single
// writer connection, in its own transaction, so of concurrent rotations of the same old hash exactly one matches.
func (s *Store) RotateRefresh(ctx context.Context, deviceID, oldHash, newHash string, expiresTS, nowTS int64) error {
	const op = "rotate refresh"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.wtx(tx).ExecContext(ctx, `UPDATE devices SET refresh_hash = ?, refresh_expires_ts = ?
			WHERE id = ? AND refresh_hash = ? AND revoked_ts = 0`, newHash, expiresTS, deviceID, oldHash)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		if _, err := s.wtx(tx).ExecContext(ctx, `INSERT OR REPLACE INTO refresh_rotated (hash, device_id, rotated_ts, expires_ts)
			VALUES (?, ?, ?, ?)`, oldHash, deviceID, nowTS, expiresTS); err != nil {
			return err
		}
		_, err = s.wtx(tx).ExecContext(ctx, `DELETE FROM refresh_rotated WHERE device_id = ? AND (expires_ts <= ? OR hash NOT IN
			(SELECT hash FROM refresh_rotated WHERE device_id = ? ORDER BY rotated_ts DESC LIMIT 16))`, deviceID, nowTS, deviceID)
		return err
	})
	if err != nil {
		return wrap(op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s %q: %w", op, deviceID, store.ErrNotFound)
	}
	return nil
}

// DeviceByRotatedRefresh implements store.Devices.
func (s *Store) DeviceByRotatedRefresh(ctx context.Context, hash string) (_ store.Device, rotatedTS int64, err error) {
	const op = "device by rotated refresh"
	if err := s.enterRead(op); err != nil {
		return store.Device{}, 0, err
	}
	defer s.leaveRead(&err)
	d, err := scanDevice(s.rq().QueryRowContext(ctx, `SELECT `+prefixed("d.", deviceCols)+`, r.rotated_ts
		FROM refresh_rotated r JOIN devices d ON d.id = r.device_id WHERE r.hash = ?`, hash), &rotatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, 0, fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	return d, rotatedTS, wrap(op, err)
}

// DevicesOf implements store.Devices.
func (s *Store) DevicesOf(ctx context.Context, userID string) (_ []store.Device, err error) {
	const op = "devices of"
	if err := s.enterRead(op); err != nil {
		return nil, err
	}
	defer s.leaveRead(&err)
	rows, err := s.rq().QueryContext(ctx, `SELECT `+deviceCols+` FROM devices
		WHERE user_id = ? AND revoked_ts = 0 ORDER BY created_ts, id`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, d)
	}
	return out, wrap(op, rows.Err())
}

// prefixed qualifies each of a comma-separated list of columns with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// RevokeDevice implements store.Devices. A second revocation keeps the first revocation's ts.
func (s *Store) RevokeDevice(ctx context.Context, deviceID string, ts int64) error {
	const op = "revoke device"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	var found bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var revoked int64
		err := s.wtx(tx).QueryRowContext(ctx, `SELECT revoked_ts FROM devices WHERE id = ?`, deviceID).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		if revoked != 0 {
			return nil
		}
		if _, err = s.wtx(tx).ExecContext(ctx, `UPDATE devices SET revoked_ts = ? WHERE id = ?`, ts, deviceID); err != nil {
			return err
		}
		// A revoked device's tokens are refused whatever they are: no need to remember them.
		_, err = s.wtx(tx).ExecContext(ctx, `DELETE FROM refresh_rotated WHERE device_id = ?`, deviceID)
		return err
	})
	if err != nil {
		return wrap(op, err)
	}
	if !found {
		return fmt.Errorf("sqlite: %s %q: %w", op, deviceID, store.ErrNotFound)
	}
	return nil
}

// PutContact implements store.Contacts.
func (s *Store) PutContact(ctx context.Context, userID, contactID string, ts int64) error {
	const op = "put contact"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	var found bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := s.wtx(tx).QueryRowContext(ctx, `SELECT count(*) FROM users WHERE id = ?`, contactID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		found = true
		_, err := s.wtx(tx).ExecContext(ctx, `INSERT INTO contacts (user_id, contact_id, created_ts) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`, userID, contactID, ts)
		return err
	})
	if err != nil {
		return wrap(op, err)
	}
	if !found {
		return fmt.Errorf("sqlite: %s: user %q: %w", op, contactID, store.ErrNotFound)
	}
	return nil
}

// DeleteContact implements store.Contacts.
func (s *Store) DeleteContact(ctx context.Context, userID, contactID string) error {
	const op = "delete contact"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.wtx(tx).ExecContext(ctx, `DELETE FROM contacts WHERE user_id = ? AND contact_id = ?`, userID, contactID)
		return err
	})
	return wrap(op, err)
}

// ContactsOf implements store.Contacts.
func (s *Store) ContactsOf(ctx context.Context, userID string) (_ []protocol.User, err error) {
	const op = "contacts of"
	if err := s.enterRead(op); err != nil {
		return nil, err
	}
	defer s.leaveRead(&err)
	rows, err := s.rq().QueryContext(ctx, `SELECT u.id, u.username, u.display_name, u.created_ts
		FROM contacts c JOIN users u ON u.id = c.contact_id
		WHERE c.user_id = ? ORDER BY u.username`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	us, err := scanUsers(rows)
	return us, wrap(op, err)
}

// PresenceAudience implements store.Contacts.
func (s *Store) PresenceAudience(ctx context.Context, userID string) ([]string, error) {
	return s.presence(ctx, "presence audience", `SELECT contact_id FROM contacts WHERE user_id = ?1`, userID)
}

// PresenceVisible implements store.Contacts.
func (s *Store) PresenceVisible(ctx context.Context, viewerID string) ([]string, error) {
	return s.presence(ctx, "presence visible", `SELECT user_id FROM contacts WHERE contact_id = ?1`, viewerID)
}

// presence returns the users of contactsQuery (with ?1 the user) and the user's direct
// partners, each once.
func (s *Store) presence(ctx context.Context, op, contactsQuery, userID string) (_ []string, err error) {
	if err := s.enterRead(op); err != nil {
		return nil, err
	}
	defer s.leaveRead(&err)
	rows, err := s.rq().QueryContext(ctx, contactsQuery+`
		UNION SELECT other.user_id FROM members me
			JOIN conversations c ON c.id = me.conversation_id AND c.type = 'direct'
			JOIN members other ON other.conversation_id = c.id AND other.user_id != me.user_id
			WHERE me.user_id = ?1`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap(op, err)
		}
		ids = append(ids, id)
	}
	return ids, wrap(op, rows.Err())
}
