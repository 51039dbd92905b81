# @summary Renders a Hash as a TOML document: plain keys first, then one [table] per
#   nested Hash (recursively; a table holding only tables gets no header of its own).
#   Undef values are left out.
# @param table
#   The document (or the table being rendered).
# @param path
#   The keys leading to `table` (used for the table headers).
# @return [String] TOML text.
function deploykit::toml(Hash $table, Array[String] $path = []) >> String {
  $set = $table.filter |$k, $v| { $v =~ NotUndef }
  $plain = $set.filter |$k, $v| { !($v =~ Hash) }.map |$k, $v| {
    "${deploykit::toml_key($k)} = ${deploykit::toml_value($v)}\n"
  }
  $tables = $set.filter |$k, $v| { $v =~ Hash }.map |$k, $v| {
    $sub = $path + [$k]
    $body = deploykit::toml($v, $sub)
    # A table holding only tables needs no header of its own ([repos] before [repos.site]).
    if $body =~ /\A\n\[/ {
      $body
    } else {
      "\n[${sub.map |$p| { deploykit::toml_key($p) }.join('.')}]\n${body}"
    }
  }
  ($plain + $tables).join('')
}
