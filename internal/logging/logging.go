// Package logging builds the daemons' root hclog logger.
package logging

import (
	"io"

	"github.com/hashicorp/go-hclog"
)

// New returns a root logger named name at level ("info" when empty), JSON
// when json is set, writing to w.
func New(name, level string, json bool, w io.Writer) hclog.Logger {
	if level == "" {
		level = "info"
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           hclog.LevelFromString(level),
		JSONFormat:      json,
		Output:          w,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	})
}
