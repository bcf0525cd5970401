package audit

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Operator action record kinds. An operator record's data holds "by" (the
// recorded principal: a certificate's operator ID, "token:NAME" for a named
// bearer token, "token" for the unnamed one), "auth" (certificate, token or
// session) and the action's parameters; its agent_id is the agent concerned,
// when there is one. Its severity is 4 (informational).
const (
	// KindOperatorPrefix starts every operator record's kind.
	KindOperatorPrefix = "operator_"
	// KindApproveUpdate: an agent binary digest was allowed on agents
	// matching globs for a window. Data: window_id, digest, agents (the
	// globs, comma-separated), start, end, matched_agents (count).
	KindApproveUpdate = "operator_approve_update"
	// KindAckAlert: an alert was acknowledged. Data: alert_id.
	KindAckAlert = "operator_ack_alert"
	// KindRelease: an address's quarantine was lifted. Data: address.
	KindRelease = "operator_release"
	// KindQuarantine: an operator quarantined an address. Data: address.
	KindQuarantine = "operator_quarantine"
)

// Reserved data keys of operator records, filled by OperatorRecord.
const (
	OperatorByKey   = "by"
	OperatorAuthKey = "auth"
)

// OperatorRecord builds the audit record of an operator action: kind is one
// of the Kind* operator kinds (or another kind starting with
// KindOperatorPrefix), by the recorded principal, auth how it authenticated,
// params the action's parameters (never credentials; keys naming a secret
// are redacted by Append anyway). Params may not use the reserved keys.
func OperatorRecord(kind, agentID, by, auth string, params map[string]string, at time.Time) (Record, error) {
	if !strings.HasPrefix(kind, KindOperatorPrefix) || len(kind) == len(KindOperatorPrefix) {
		return Record{}, fmt.Errorf("audit: operator record kind %q must start with %q", kind, KindOperatorPrefix)
	}
	if by == "" || auth == "" {
		return Record{}, errors.New("audit: operator record without principal or authentication method")
	}
	data := make(map[string]string, len(params)+2)
	for k, v := range params {
		if k == OperatorByKey || k == OperatorAuthKey {
			return Record{}, fmt.Errorf("audit: operator record parameter %q is reserved", k)
		}
		data[k] = v
	}
	data[OperatorByKey], data[OperatorAuthKey] = by, auth
	return Record{Time: at, Kind: kind, AgentID: agentID, Severity: 4, Data: data}, nil
}
