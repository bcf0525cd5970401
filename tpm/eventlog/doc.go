// Package eventlog parses and replays TCG PC Client firmware event logs
// (the bytes Linux exposes at /sys/kernel/security/tpm0/binary_bios_measurements)
// and verifies them against PCR values taken from a verified TPM quote. It is
// pure: no device access; bytes in, structs out.
//
// # Formats
//
// Both the legacy SHA-1 log (TCG_PCClientPCREvent records) and the
// crypto-agile TPM 2.0 log (a "Spec ID Event03" header, then TCG_PCR_EVENT2
// records with one digest per bank) are read. EV_NO_ACTION records are never
// extended; the "StartupLocality" record makes PCR 0 start at
// 00..00||locality instead of zero (a TPM started from locality 3, say).
//
// # What is evidence
//
// A log is evidence only as far as it replays: Verify returns the events of
// the PCRs whose replayed value equals the quoted value, and nothing of the
// PCRs that did not replay or were not supplied. Within a replayed event, the
// digest is evidence; the event data is evidence only when the digest is the
// hash of the data (Event.DataVerified, Event.DataBound). By event type:
//
//   - Bound (the digest is defined as the hash of the data; a mismatch is
//     ErrDataDigestMismatch): EV_SEPARATOR, EV_ACTION, EV_EFI_ACTION,
//     EV_EFI_VARIABLE_DRIVER_CONFIG (the whole UEFI_VARIABLE_DATA, so the
//     Secure Boot variables SecureBoot/PK/KEK/db/dbx are evidence),
//     EV_EFI_GPT_EVENT.
//   - Bound with known firmware quirks: EV_EFI_VARIABLE_BOOT(2) — EDK2-based
//     firmware hashes only the VariableData, not the variable's GUID and
//     name; EV_EFI_VARIABLE_AUTHORITY — shim releases before 2020 log one
//     byte more than they hash (seen in the debian-10 fixture). Such a digest
//     is accepted, but DataVerified stays false: the name is not bound.
//   - Bound when it happens to match (strings of EV_S_CRTM_VERSION, EV_IPL,
//     EV_EVENT_TAG, EV_COMPACT_HASH, EV_PLATFORM_CONFIG_FLAGS,
//     EV_NONHOST_INFO/CONFIG, EV_OMIT_BOOT_DEVICE_EVENTS, EV_EFI_HCRTM_EVENT;
//     a trailing NUL may be excluded from the hash): DataVerified is set when
//     the hash matches; a mismatch is not an error. systemd-boot's EV_IPL
//     command lines (arch-linux-workstation) do not match, for example.
//   - Not bound (the digest covers an image, table or firmware volume, and
//     the data only describes it): EV_POST_CODE, EV_S_CRTM_CONTENTS,
//     EV_CPU_MICROCODE, EV_TABLE_OF_DEVICES, EV_IPL_PARTITION_DATA,
//     EV_NONHOST_CODE, EV_EFI_BOOT_SERVICES_APPLICATION,
//     EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER (the data
//     is a UEFI_IMAGE_LOAD_EVENT: image load address, length and device path
//     — none of it is evidence, only the digest of the PE image is),
//     EV_EFI_PLATFORM_FIRMWARE_BLOB(2), EV_EFI_HANDOFF_TABLES(2), EV_EFI_SPDM_*.
//     Policies must match such events by digest, never by their data.
//
// # Order: the pre-OS record
//
// A PCR's hash chain fixes the order of that PCR's events, and nothing else:
// how a log interleaves PCRs is not authenticated. Root on a running device
// can extend any of PCRs 0-15 and append a matching event to the log it
// sends, and the log still replays; but the extension lands after
// everything the firmware measured, so after the PCR's EV_SEPARATOR, which
// the firmware measures into PCRs 0-7 before it runs the boot loader.
// Verify therefore applies CheckStructure: exactly one separator, of the
// normal value, in each of PCRs 0-7; in PCR 7, the Secure Boot configuration
// (every EV_EFI_VARIABLE_DRIVER_CONFIG) before the separator and only
// authorities (EV_EFI_VARIABLE_AUTHORITY, EV_EFI_SPDM_DEVICE_AUTHORITY)
// after it; each Secure Boot mode variable measured once. A violation is a
// *StructureError matching ErrMalformed and its own sentinel
// (ErrSecureBootAfterSeparator, ErrSeparatorMissing, ...). The Secure Boot
// state is read from the configuration before PCR 7's separator only.
//
// # Cost
//
// Logs come from devices, so every step is linear in the log's size: at most
// MaxAlgorithms banks, MaxEvents records and MaxEventDataSize bytes of data
// per event; no bytes after the last record (zero padding is
// ErrTrailingBytes, so one log has one digest). Parse hashes no event data;
// Verify reads each bound event's data at most twice, in its bank only, and
// decodes no certificate. The worst 4 MiB log found is in
// BenchmarkWorstCaseLog (docs/performance.md, "Worst-case firmware log").
//
// # Firmware quirks seen in the fixtures
//
// A SecureBoot variable measured with zero-length data (arch-linux-workstation)
// is read as "Secure Boot disabled". Secure Boot database certificates are
// identified with a lenient decoder (CertInfo) because some real ones are not
// strict DER (a negative serial number in glinux-alex's PK).
package eventlog
