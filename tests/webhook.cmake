# Signed webhooks (Svix, as Clerk sends them): transport/relay/webhook.h
# against the Svix libraries' official vector.
knit_test(webhook
  SOURCES unit/test_webhook.c
  CASES official_vector refusals
  LIBS knit_relay)
