package store

import (
	"strconv"
	"strings"

	// Database drivers: pure-Go SQLite (no cgo) and pgx for PostgreSQL.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// dialect holds the few differences between the engines. Queries are written
// once with '?' placeholders and the types named below.
type dialect struct {
	name   string
	blob   string
	bigint string
	serial string
	// txid is the directive outbox's writer-transaction column: on
	// PostgreSQL the inserting transaction's 64-bit ID (directives.go).
	txid string
	// numbered placeholders ($1, $2, ...) instead of '?'.
	numbered bool
	// rowVersionTriggers give an agent's row a new random row_version on
	// every insert and on every update that does not set one itself.
	rowVersionTriggers string
}

var (
	sqliteDialect = dialect{name: EngineSQLite, blob: "BLOB", bigint: "INTEGER", serial: "INTEGER PRIMARY KEY AUTOINCREMENT",
		txid: "INTEGER NOT NULL DEFAULT 0",
		rowVersionTriggers: `UPDATE agents SET row_version = random();
	CREATE TRIGGER agents_row_version_insert AFTER INSERT ON agents FOR EACH ROW
	BEGIN UPDATE agents SET row_version = random() WHERE id = NEW.id; END;
	CREATE TRIGGER agents_row_version_update AFTER UPDATE ON agents FOR EACH ROW WHEN NEW.row_version = OLD.row_version
	BEGIN UPDATE agents SET row_version = random() WHERE id = NEW.id; END`}
	postgresDialect = dialect{name: EnginePostgres, blob: "BYTEA", bigint: "BIGINT", serial: "BIGSERIAL PRIMARY KEY", numbered: true,
		txid: "BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)",
		rowVersionTriggers: `UPDATE agents SET row_version = (random() * 9.2e18)::bigint;
	CREATE FUNCTION pulse_agents_row_version() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF TG_OP = 'INSERT' OR NEW.row_version = OLD.row_version THEN NEW.row_version := (random() * 9.2e18)::bigint; END IF; RETURN NEW; END $$;
	CREATE TRIGGER agents_row_version BEFORE INSERT OR UPDATE ON agents FOR EACH ROW EXECUTE FUNCTION pulse_agents_row_version()`}
)

// rebind turns '?' placeholders into the engine's form. Queries never hold a
// literal '?' in strings.
func (d dialect) rebind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// ddl expands {{blob}}, {{bigint}}, {{serial}}, {{txid}} and
// {{row_version_triggers}} in a schema statement.
func (d dialect) ddl(s string) string {
	return strings.NewReplacer("{{blob}}", d.blob, "{{bigint}}", d.bigint, "{{serial}}", d.serial, "{{txid}}", d.txid,
		"{{row_version_triggers}}", d.rowVersionTriggers).Replace(s)
}
