# @summary A TOML value: strings quoted and escaped, arrays, inline tables for Hashes
#   inside arrays or as values, integers, floats and booleans as they are.
# @param value
#   The value.
# @return [String] The value as TOML.
function deploykit::toml_value(Variant[String, Numeric, Boolean, Array, Hash] $value) >> String {
  case $value {
    String: { deploykit::toml_string($value) }
    Array: { "[${value.map |$v| { deploykit::toml_value($v) }.join(', ')}]" }
    Hash: {
      $pairs = $value.filter |$k, $v| { $v =~ NotUndef }.map |$k, $v| {
        "${deploykit::toml_key($k)} = ${deploykit::toml_value($v)}"
      }
      $pairs.empty ? { true => '{}', default => "{ ${pairs.join(', ')} }" }
    }
    default: { String($value) }
  }
}
