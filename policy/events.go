package policy

// EventTypes are the TCG PC Client / UEFI event type names a boot rule may
// name in types = [...] (TCG PC Client Platform Firmware Profile §10.4.1).
// Evidence carries the same names.
var EventTypes = []string{
	"EV_PREBOOT_CERT",
	"EV_POST_CODE",
	"EV_UNUSED",
	"EV_NO_ACTION",
	"EV_SEPARATOR",
	"EV_ACTION",
	"EV_EVENT_TAG",
	"EV_S_CRTM_CONTENTS",
	"EV_S_CRTM_VERSION",
	"EV_CPU_MICROCODE",
	"EV_PLATFORM_CONFIG_FLAGS",
	"EV_TABLE_OF_DEVICES",
	"EV_COMPACT_HASH",
	"EV_IPL",
	"EV_IPL_PARTITION_DATA",
	"EV_NONHOST_CODE",
	"EV_NONHOST_CONFIG",
	"EV_NONHOST_INFO",
	"EV_OMIT_BOOT_DEVICE_EVENTS",
	"EV_POST_CODE2",
	"EV_EFI_EVENT_BASE",
	"EV_EFI_VARIABLE_DRIVER_CONFIG",
	"EV_EFI_VARIABLE_BOOT",
	"EV_EFI_BOOT_SERVICES_APPLICATION",
	"EV_EFI_BOOT_SERVICES_DRIVER",
	"EV_EFI_RUNTIME_SERVICES_DRIVER",
	"EV_EFI_GPT_EVENT",
	"EV_EFI_ACTION",
	"EV_EFI_PLATFORM_FIRMWARE_BLOB",
	"EV_EFI_HANDOFF_TABLES",
	"EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	"EV_EFI_HANDOFF_TABLES2",
	"EV_EFI_VARIABLE_BOOT2",
	"EV_EFI_GPT_EVENT2",
	"EV_EFI_HCRTM_EVENT",
	"EV_EFI_VARIABLE_AUTHORITY",
	"EV_EFI_SPDM_FIRMWARE_BLOB",
	"EV_EFI_SPDM_FIRMWARE_CONFIG",
	"EV_EFI_SPDM_DEVICE_POLICY",
	"EV_EFI_SPDM_DEVICE_AUTHORITY",
}

// DefaultComponentTypes are the event types an allow block checks when it
// sets no types: the UEFI images firmware loaded (boot loaders, shim, GRUB,
// a kernel loaded as an EFI application, option ROM drivers).
var DefaultComponentTypes = []string{
	"EV_EFI_BOOT_SERVICES_APPLICATION",
	"EV_EFI_BOOT_SERVICES_DRIVER",
	"EV_EFI_RUNTIME_SERVICES_DRIVER",
}

func isEventType(name string) bool {
	for _, t := range EventTypes {
		if t == name {
			return true
		}
	}
	return false
}

// MOKVariables are the names (without the trailing NUL) of the MOK state
// variables shim measures into PCR 14 before the OS starts, each as an
// EV_IPL event whose data is the NUL-terminated name. They are the only
// pre-OS measurements a runtime PCR may hold, and the names
// runtime_pcr_history and BootEvidence.RuntimePCRHistory accept.
var MOKVariables = []string{
	"MokList",
	"MokListX",
	"MokListTrusted",
	"MokSBState",
	"MokPolicy",
}

// IsMOKVariable reports whether name is one of MOKVariables.
func IsMOKVariable(name string) bool {
	for _, v := range MOKVariables {
		if v == name {
			return true
		}
	}
	return false
}
