package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// The accounts part of store.Store: users, devices and refresh tokens, contact lists. Each
// call is one statement or one short transaction on the pool; none of it is on the message
// path.

const userCols = `id, username, display_name, created_ts`

func scanUser(row pgx.Row) (protocol.User, error) {
	var u protocol.User
	err := row.Scan(&u.ID, &u.Username, &u.DisplayName, &u.CreatedTS)
	return u, err
}

func collectUsers(rows pgx.Rows, err error) ([]protocol.User, error) {
	if err != nil {
		return nil, err
	}
	us, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (protocol.User, error) { return scanUser(r) })
	if us == nil {
		us = []protocol.User{}
	}
	return us, err
}

// isUnique reports a unique or primary key violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// wrap names the operation, and words an outage as store.ErrUnavailable (the original
// error stays in the chain).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) && !errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// notFound words a missing row as store.ErrNotFound.
func notFound(op, what string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s %q: %w", op, what, store.ErrNotFound)
	}
	return wrap(op, err)
}

// CreateUser implements store.Users.
func (db *DB) CreateUser(ctx context.Context, u protocol.User, passwordHash string) error {
	if err := db.enter("create user"); err != nil {
		return err
	}
	defer db.leave()
	_, err := db.pool.Exec(ctx, `INSERT INTO users (id, username, display_name, password_hash, created_ts)
		VALUES ($1, $2, $3, $4, $5)`, u.ID, u.Username, u.DisplayName, passwordHash, u.CreatedTS)
	if isUnique(err) {
		return fmt.Errorf("postgres: create user %q: %w", u.Username, store.ErrConflict)
	}
	return wrap("create user", err)
}

// UserByUsername implements store.Users.
func (db *DB) UserByUsername(ctx context.Context, username string) (protocol.User, string, error) {
	if err := db.enter("user by username"); err != nil {
		return protocol.User{}, "", err
	}
	defer db.leave()
	var u protocol.User
	var hash string
	err := db.pool.QueryRow(ctx, `SELECT `+userCols+`, password_hash FROM users WHERE username = $1`, username).
		Scan(&u.ID, &u.Username, &u.DisplayName, &u.CreatedTS, &hash)
	if err != nil {
		return protocol.User{}, "", notFound("user by username", username, err)
	}
	return u, hash, nil
}

// UserByID implements store.Users.
func (db *DB) UserByID(ctx context.Context, id string) (protocol.User, error) {
	if err := db.enter("user by i d"); err != nil {
		return protocol.User{}, err
	}
	defer db.leave()
	u, err := scanUser(db.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
	if err != nil {
		return protocol.User{}, notFound("user by id", id, err)
	}
	return u, nil
}

// UsersByID implements store.Users: one statement, the ids as one array parameter.
func (db *DB) UsersByID(ctx context.Context, ids []string) ([]protocol.User, error) {
	if err := db.enter("users by i d"); err != nil {
		return nil, err
	}
	defer db.leave()
	us, err := collectUsers(db.pool.Query(ctx, `SELECT `+userCols+` FROM users WHERE id = ANY($1)`, ids))
	return us, wrap("users by id", err)
}

// SetDisplayName implements store.Users.
func (db *DB) SetDisplayName(ctx context.Context, id, displayName string) (protocol.User, error) {
	if err := db.enter("set display name"); err != nil {
		return protocol.User{}, err
	}
	defer db.leave()
	u, err := scanUser(db.pool.QueryRow(ctx,
		`UPDATE users SET display_name = $1 WHERE id = $2 RETURNING `+userCols, displayName, id))
	if err != nil {
		return protocol.User{}, notFound("set display name", id, err)
	}
	return u, nil
}

// SearchUsers implements store.Users: a range scan of the username index (COLLATE "C", so
// that a prefix is a range of bytes, as on SQLite).
func (db *DB) SearchUsers(ctx context.Context, prefix string, limit int) ([]protocol.User, error) {
	if err := db.enter("search users"); err != nil {
		return nil, err
	}
	defer db.leave()
	if limit <= 0 {
		limit = 50
	}
	us, err := collectUsers(db.pool.Query(ctx, `SELECT `+userCols+` FROM users
		WHERE username >= $1 AND left(username, length($1)) = $1 ORDER BY username LIMIT $2`, prefix, limit))
	return us, wrap("search users", err)
}

const deviceCols = `id, user_id, name, refresh_hash, refresh_expires_ts, created_ts, revoked_ts`

// scanDevice scans deviceCols, and then any columns after them into extra.
func scanDevice(row pgx.Row, extra ...any) (store.Device, error) {
	var d store.Device
	err := row.Scan(append([]any{&d.ID, &d.UserID, &d.Name, &d.RefreshHash, &d.RefreshExpiresTS, &d.CreatedTS, &d.RevokedTS}, extra...)...)
	return d, err
}

// CreateDevice implements store.Devices.
func (db *DB) CreateDevice(ctx context.Context, d store.Device) error {
	if err := db.enter("create device"); err != nil {
		return err
	}
	defer db.leave()
	_, err := db.pool.Exec(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		d.ID, d.UserID, d.Name, d.RefreshHash, d.RefreshExpiresTS, d.CreatedTS, d.RevokedTS)
	if isUnique(err) {
		return fmt.Errorf("postgres: create device %q: %w", d.ID, store.ErrConflict)
	}
	return wrap("create device", err)
}

// Device implements store.Devices.
func (db *DB) Device(ctx context.Context, id string) (store.Device, error) {
	if err := db.enter("device"); err != nil {
		return store.Device{}, err
	}
	defer db.leave()
	d, err := scanDevice(db.pool.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if err != nil {
		return store.Device{}, notFound("device", id, err)
	}
	return d, nil
}

// DeviceByRefreshHash implements store.Devices.
func (db *DB) DeviceByRefreshHash(ctx context.Context, hash string) (store.Device, error) {
	if err := db.enter("device by refresh hash"); err != nil {
		return store.Device{}, err
	}
	defer db.leave()
	d, err := scanDevice(db.pool.QueryRow(ctx,
		`SELECT `+deviceCols+` FROM devices WHERE refresh_hash = $1 AND revoked_ts = 0 LIMIT 1`, hash))
	if err != nil {
		return store.Device{}, notFound("device by refresh hash", "", err)
	}
	return d, nil
}

// RotateRefresh implements store.Devices. The compare-and-swap is one UPDATE: of concurrent
// rotations of one old hash, the row lock lets one through and the others find the hash
// changed (READ COMMITTED re-checks the WHERE on the updated row).
func (db *DB) RotateRefresh(ctx context.Context, deviceID, oldHash, newHash string, expiresTS, nowTS int64) error {
	if err := db.enter("rotate refresh"); err != nil {
		return err
	}
	defer db.leave()
	var n int64
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE devices SET refresh_hash = $1, refresh_expires_ts = $2
			WHERE id = $3 AND refresh_hash = $4 AND revoked_ts = 0`, newHash, expiresTS, deviceID, oldHash)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_rotated (hash, device_id, rotated_ts, expires_ts)
			VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO UPDATE
			SET device_id = EXCLUDED.device_id, rotated_ts = EXCLUDED.rotated_ts, expires_ts = EXCLUDED.expires_ts`,
			oldHash, deviceID, nowTS, expiresTS); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM refresh_rotated WHERE device_id = $1 AND (expires_ts <= $2 OR hash NOT IN
			(SELECT hash FROM refresh_rotated WHERE device_id = $1 ORDER BY rotated_ts DESC LIMIT 16))`, deviceID, nowTS)
		return err
	})
	if err != nil {
		return wrap("rotate refresh", err)
	}
	if n == 0 {
		return fmt.Errorf("postgres: rotate refresh %q: %w", deviceID, store.ErrNotFound)
	}
	return nil
}

// DeviceByRotatedRefresh implements store.Devices.
func (db *DB) DeviceByRotatedRefresh(ctx context.Context, hash string) (store.Device, int64, error) {
	if err := db.enter("device by rotated refresh"); err != nil {
		return store.Device{}, 0, err
	}
	defer db.leave()
	var rotated int64
	d, err := scanDevice(db.pool.QueryRow(ctx, `SELECT d.id, d.user_id, d.name, d.refresh_hash, d.refresh_expires_ts,
			d.created_ts, d.revoked_ts, r.rotated_ts
		FROM refresh_rotated r JOIN devices d ON d.id = r.device_id WHERE r.hash = $1`, hash), &rotated)
	if err != nil {
		return store.Device{}, 0, notFound("device by rotated refresh", "", err)
	}
	return d, rotated, nil
}

// DevicesOf implements store.Devices.
func (db *DB) DevicesOf(ctx context.Context, userID string) ([]store.Device, error) {
	if err := db.enter("devices of"); err != nil {
		return nil, err
	}
	defer db.leave()
	rows, err := db.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices
		WHERE user_id = $1 AND revoked_ts = 0 ORDER BY created_ts, id`, userID)
	if err != nil {
		return nil, wrap("devices of", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Device, error) { return scanDevice(r) })
	return ds, wrap("devices of", err)
}

// RevokeDevice implements store.Devices. A second revocation keeps the first one's ts.
func (db *DB) RevokeDevice(ctx context.Context, deviceID string, ts int64) error {
	if err := db.enter("revoke device"); err != nil {
		return err
	}
	defer db.leave()
	var found bool
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT true FROM devices WHERE id = $1`, deviceID).Scan(&found); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE devices SET revoked_ts = $1 WHERE id = $2 AND revoked_ts = 0`, ts, deviceID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM refresh_rotated WHERE device_id = $1`, deviceID)
		return err
	})
	if err != nil {
		return wrap("revoke device", err)
	}
	if !found {
		return fmt.Errorf("postgres: revoke device %q: %w", deviceID, store.ErrNotFound)
	}
	return nil
}

// PutContact implements store.Contacts.
func (db *DB) PutContact(ctx context.Context, userID, contactID string, ts int64) error {
	if err := db.enter("put contact"); err != nil {
		return err
	}
	defer db.leave()
	tag, err := db.pool.Exec(ctx, `INSERT INTO contacts (user_id, contact_id, created_ts)
		SELECT $1, id, $3 FROM users WHERE id = $2
		ON CONFLICT DO NOTHING`, userID, contactID, ts)
	if err != nil {
		return wrap("put contact", err)
	}
	if tag.RowsAffected() == 0 {
		var exists bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, contactID).Scan(&exists); err != nil {
			return wrap("put contact", err)
		}
		if !exists {
			return fmt.Errorf("postgres: put contact: user %q: %w", contactID, store.ErrNotFound)
		}
	}
	return nil
}

// DeleteContact implements store.Contacts.
func (db *DB) DeleteContact(ctx context.Context, userID, contactID string) error {
	if err := db.enter("delete contact"); err != nil {
		return err
	}
	defer db.leave()
	_, err := db.pool.Exec(ctx, `DELETE FROM contacts WHERE user_id = $1 AND contact_id = $2`, userID, contactID)
	return wrap("delete contact", err)
}

// ContactsOf implements store.Contacts.
func (db *DB) ContactsOf(ctx context.Context, userID string) ([]protocol.User, error) {
	if err := db.enter("contacts of"); err != nil {
		return nil, err
	}
	defer db.leave()
	us, err := collectUsers(db.pool.Query(ctx, `SELECT u.id, u.username, u.display_name, u.created_ts
		FROM contacts c JOIN users u ON u.id = c.contact_id
		WHERE c.user_id = $1 ORDER BY u.username`, userID))
	return us, wrap("contacts of", err)
}
