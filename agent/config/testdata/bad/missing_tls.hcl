verifier = "verifier.example:7443"
tpm = "none"
