package config

import (
	"reflect"

	"github.com/pulse-attest/pulse/internal/hclconf"
)

// Keys lists every key the agent's configuration file accepts (dotted
// paths, blocks included). docs/config.md and `pulse-agent config example`
// are checked against it.
func Keys() []hclconf.Key { return hclconf.Keys(reflect.TypeOf(rawConfig{})) }
