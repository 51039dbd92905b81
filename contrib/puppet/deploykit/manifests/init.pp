# @summary Installs and configures deploykit (deploykit-server, -hub, -cli).
#
# Writes /etc/deploykit/NAME.toml for every daemon of the chosen roles, installs the
# packages and keeps the daemons running. Secrets are never written: the broker
# passcode is referenced by its file (`$broker_passcode_file`), which you provide.
#
# @param roles
#   Any of 'server' (dk-agent, dk-fetch, dk-apt-watch), 'hub' (dk-web, dk-webhook,
#   dk-jenkins, dk-reprepro, dk-keepalive) and 'cli' (dk-deploy, dk-stomp, dk-notify).
# @param broker_url
#   The `[broker] url` of every config (stomp://, stomp+ssl:// or failover://(…)).
# @param broker_vhost
#   The STOMP virtual host (the tools' default is '/').
# @param broker_login
#   The broker login, if the broker wants one.
# @param broker_passcode_file
#   Absolute path of a root-only file holding the passcode (first line). Written as
#   `passcode_file` into every config; for the hub daemons, which run as their own
#   users, a systemd drop-in hands the file over as a credential. The file itself is
#   yours to provide (e.g. from a secret store); this module never reads it.
# @param wire
#   'json' or 'legacy' (the original's text bodies and future.* topics).
# @param manage_packages
#   Install the packages of the roles.
# @param package_ensure
#   The packages' ensure ('installed', 'latest' or a version).
# @param manage_services
#   Keep the daemons of the roles running and enabled, restarted when their config
#   changes. Set false where no systemd runs (a chroot, an image build).
# @param config_dir
#   Where the configs go.
# @param fetch_repos
#   dk-fetch's [repos.NAME]: name => { path, mode, target, branch, user, remote, … }.
# @param agent_sites
#   dk-agent's [sites.NAME]: name => { repo, releases, current, hooks, deploy, … }.
# @param agent_trusted_keys
#   dk-agent's [trusted_keys]: name => 'ed25519:…' (public keys).
# @param fetch_config
#   More top-level keys and tables of fetch.toml (node, max_parallel, …).
# @param agent_config
#   More of agent.toml (identity, classes, facts, …).
# @param apt_watch_config
#   More of apt-watch.toml (packages, action, …).
# @param web_config
#   web.toml, merged over the packaged values (listen, database, key_file, auth).
# @param webhook_config
#   webhook.toml, merged over the packaged values (spool).
# @param jenkins_config
#   jenkins.toml, merged over the packaged values (jenkins.url).
# @param reprepro_config
#   reprepro.toml, merged over the packaged values (base, spool_dir, dists).
# @param keepalive_config
#   keepalive.toml (interval, target, …).
#
# @example A server
#   class { 'deploykit':
#     roles                => ['server'],
#     broker_url           => 'stomp://mq.example.com:61613',
#     broker_login         => 'deploykit',
#     broker_passcode_file => '/etc/deploykit/passcode',
#     fetch_repos          => { 'site' => { 'path' => '/srv/git/site', 'mode' => 'trusting', 'target' => '/srv/www/site' } },
#   }
class deploykit (
  Array[Enum['server', 'hub', 'cli']] $roles = ['server'],
  String[1] $broker_url = 'stomp://127.0.0.1:61613',
  Optional[String[1]] $broker_vhost = undef,
  Optional[String[1]] $broker_login = undef,
  Optional[Pattern[/\A\//]] $broker_passcode_file = undef,
  Enum['json', 'legacy'] $wire = 'json',
  Boolean $manage_packages = true,
  String[1] $package_ensure = 'installed',
  Boolean $manage_services = true,
  Pattern[/\A\//] $config_dir = '/etc/deploykit',
  Hash[String[1], Hash] $fetch_repos = {},
  Hash[String[1], Hash] $agent_sites = {},
  Hash[String[1], String[1]] $agent_trusted_keys = {},
  Hash[String[1], Any] $fetch_config = {},
  Hash[String[1], Any] $agent_config = {},
  Hash[String[1], Any] $apt_watch_config = {},
  Hash[String[1], Any] $web_config = {},
  Hash[String[1], Any] $webhook_config = {},
  Hash[String[1], Any] $jenkins_config = {},
  Hash[String[1], Any] $reprepro_config = {},
  Hash[String[1], Any] $keepalive_config = {},
) {
  $broker = {
    'url'           => $broker_url,
    'vhost'         => $broker_vhost,
    'login'         => $broker_login,
    'passcode_file' => $broker_passcode_file,
  }.filter |$k, $v| { $v =~ NotUndef }
  $wired = { 'wire' => $wire }
  $fetch_tables = $fetch_repos.empty ? { true => {}, default => { 'repos' => $fetch_repos } }
  $agent_tables = {
    'trusted_keys' => $agent_trusted_keys,
    'sites'        => $agent_sites,
  }.filter |$k, $v| { !$v.empty }

  # daemon => [role, the whole document]; the packaged defaults come first, yours win.
  $daemons = {
    'fetch'     => ['server', $wired + $fetch_config + $fetch_tables],
    'agent'     => ['server', $wired + $agent_config + $agent_tables],
    'apt-watch' => ['server', $wired + $apt_watch_config],
    'web'       => ['hub', {
          'listen'   => '127.0.0.1:8090',
          'database' => '/var/lib/deploykit/web/history.sqlite',
          'key_file' => "${config_dir}/web.key",
          'auth'     => { 'mode' => 'basic', 'htpasswd' => "${config_dir}/web.htpasswd" },
        } + $wired + $web_config],
    'webhook'   => ['hub', { 'spool' => '/var/lib/deploykit/webhook/spool' } + $wired + $webhook_config],
    'jenkins'   => ['hub', { 'jenkins' => { 'url' => 'http://127.0.0.1:8080/' } } + $wired + $jenkins_config],
    'reprepro'  => ['hub', {
          'base'      => '/var/lib/deploykit/reprepro',
          'spool_dir' => '/var/lib/deploykit/reprepro/spool',
          'dists'     => { 'bookworm' => { 'incoming' => '/var/lib/deploykit/reprepro/incoming/bookworm' } },
        } + $wired + $reprepro_config],
    'keepalive' => ['hub', $keepalive_config],
  }.filter |$name, $d| { $d[0] in $roles }

  if $manage_packages {
    package { $roles.map |$role| { "deploykit-${role}" }:
      ensure => $package_ensure,
      before => File[$config_dir],
    }
  }

  file { $config_dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  $daemons.each |$name, $d| {
    deploykit::config { $name:
      document      => $d[1] + { 'broker' => $broker },
      config_dir    => $config_dir,
      own_user      => $d[0] == 'hub',
      passcode_file => $broker_passcode_file,
      service       => $manage_services,
      require       => File[$config_dir],
    }
  }
}
