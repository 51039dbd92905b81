# @summary A TOML basic string: quoted, with backslash, double quote and the control
#   characters escaped, so that no value can end its string or start another key.
# @param value
#   The text.
# @return [String] The quoted string.
function deploykit::toml_string(String $value) >> String {
  # lint:ignore:double_quoted_strings (the keys are the characters themselves)
  $escapes = {
    '\\'       => '\\\\',
    '"'        => '\\"',
    "\u0008"   => '\\b',
    "\t"       => '\\t',
    "\n"       => '\\n',
    "\u000C"   => '\\f',
    "\r"       => '\\r',
  }
  # lint:endignore
  $chars = $value.split('').map |$c| {
    $e = $escapes[$c]
    if $e =~ NotUndef {
      $e
    } elsif $c =~ /[\x00-\x1f\x7f]/ {
      fail('deploykit: a config value holds a control character TOML cannot take unescaped')
    } else {
      $c
    }
  }
  "\"${chars.join('')}\""
}
