# A server that fetches one repo and deploys one site, on a RabbitMQ pair.
class { 'deploykit':
  roles                => ['server', 'cli'],
  broker_url           => 'failover://(stomp://mq1.example.com:61613,stomp://mq2.example.com:61613)?randomize=false',
  broker_login         => 'deploykit',
  broker_passcode_file => '/etc/deploykit/passcode',
  fetch_repos          => {
    'site' => { 'path' => '/srv/git/site', 'mode' => 'trusting', 'target' => '/srv/www/site', 'user' => 'www-data' },
  },
  agent_trusted_keys   => { 'web' => 'ed25519:REPLACE-WITH-dk-web-PUBLIC-KEY=' },
  agent_sites          => {
    'site' => {
      'repo'     => '/srv/git/site',
      'releases' => '/srv/releases/site',
      'current'  => '/srv/www/current',
      'hooks'    => '/etc/deploykit/hooks/site',
      'deploy'   => ['web'],
    },
  },
  agent_config         => { 'classes' => ['web'], 'facts' => { 'sitetype' => 'live' } },
}
