//! Argus Tchap connector: Juniper GraphQL schema, resolvers and the ingestion use-case.
