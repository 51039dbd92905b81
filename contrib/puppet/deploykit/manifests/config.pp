# @summary One daemon's /etc/deploykit/NAME.toml, and its service when managed.
#
# @param document
#   The whole config as a Hash (tables as nested Hashes); rendered by deploykit::toml,
#   which quotes every string, so no value can break out of its TOML string.
# @param config_dir
#   Where the file goes.
# @param own_user
#   The daemon runs as its own system user (the hub daemons): a broker passcode file
#   is handed to it as a systemd credential instead of being read from the config.
# @param passcode_file
#   The broker passcode file, if any.
# @param service
#   Keep dk-NAME running and enabled; restart it when the file changes.
define deploykit::config (
  Hash $document,
  Pattern[/\A\//] $config_dir = '/etc/deploykit',
  Boolean $own_user = false,
  Optional[Pattern[/\A\//]] $passcode_file = undef,
  Boolean $service = true,
) {
  $unit = "dk-${title}"

  file { "${config_dir}/${title}.toml":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('deploykit/config.toml.epp', { 'daemon' => $unit, 'document' => $document }),
  }

  if $own_user {
    $dropin = "/etc/systemd/system/${unit}.service.d"
    if $passcode_file {
      file { $dropin:
        ensure => directory,
        owner  => 'root',
        group  => 'root',
        mode   => '0755',
      }
      file { "${dropin}/deploykit-broker-passcode.conf":
        ensure  => file,
        owner   => 'root',
        group   => 'root',
        mode    => '0644',
        content => epp('deploykit/passcode.conf.epp', { 'passcode_file' => $passcode_file }),
      }
    } else {
      file { "${dropin}/deploykit-broker-passcode.conf":
        ensure => absent,
      }
    }
    if $service {
      File["${dropin}/deploykit-broker-passcode.conf"] ~> Service[$unit]
    }
  }

  if $service {
    service { $unit:
      ensure    => running,
      enable    => true,
      subscribe => File["${config_dir}/${title}.toml"],
    }
  }
}
