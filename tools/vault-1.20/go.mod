module github.com/vault-plugin-carbon/vault-plugin-carbon/tools/vault-1.20

go 1.24.4

require github.com/hashicorp/vault v1.20.4

// The release's in-tree sdk (replaced by ./sdk in its own go.mod) matches this tag.
replace github.com/hashicorp/vault/sdk => github.com/hashicorp/vault/sdk v0.19.0
