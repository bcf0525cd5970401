package tpm

import (
	"fmt"
	"os"
)

// DefaultFirmwareLogPath is where Linux exposes the firmware (TCG PC client)
// event log; securityfs must be mounted.
const DefaultFirmwareLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// ReadFirmwareLog reads the raw firmware event log from path ("" means
// DefaultFirmwareLogPath). A missing file keeps os.ErrNotExist in the chain;
// an empty log is an error.
func ReadFirmwareLog(path string) ([]byte, error) {
	if path == "" {
		path = DefaultFirmwareLogPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read firmware event log: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("read firmware event log %s: file is empty", path)
	}
	return b, nil
}
