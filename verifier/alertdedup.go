package verifier

import "time"

// AlertDedupWindow is the time bucket of the alerts a caller can repeat at
// will (identity takeover, partition mismatch): within one window the same
// agent and EK raise one alert, however often they try; each attempt is
// still refused and logged. A new window raises a new alert, so a
// persistent attempt is reported again every window (docs/alerts.md).
const AlertDedupWindow = time.Hour

// dedupBucket numbers the AlertDedupWindow holding t (the same on every
// replica, up to clock skew at a window's edge).
func dedupBucket(t time.Time) int64 {
	return t.Unix() / int64(AlertDedupWindow/time.Second)
}
