policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  agent_binary {
    allow = [
      "not-a-digest",
      "019c0499c6992eb09393d9da6d13c7b4df7fad49", # a SHA-1, not a SHA-256
      "sha256:019c0499c6992eb09393d9da6d13c7b4df7fad496120d64038891b296243c205",
    ]
  }

  measured_boot {
    bank = "sha1"
    forbid "old-shim" {
      digests = ["40d6cae02973789080cf4c3a9ad11b5a0a4d8bba4438ab96e276cc784454dee7"]
    }
  }
}
