# @summary A TOML key: bare when it is only A-Z a-z 0-9 _ -, else a quoted string.
# @param key
#   The key.
# @return [String] The key as TOML.
function deploykit::toml_key(String $key) >> String {
  $key ? {
    /\A[A-Za-z0-9_-]+\z/ => $key,
    default              => deploykit::toml_string($key),
  }
}
