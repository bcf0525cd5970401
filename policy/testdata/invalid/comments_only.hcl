# The policy was commented out during an incident and never restored.
# policy "default" {
#   match { agents = ["*"] }
#   tpm = "required"
# }
