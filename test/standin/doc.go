// Package standin starts real Docker registries on loopback that stand in
// for Sonatype Nexus Repository OSS in end-to-end tests and the quickstart.
//
// Nexus cannot run on the test machines, so each stand-in is the CNCF
// Distribution registry (github.com/distribution/distribution/v3) served
// in-process, plus the specific Nexus behaviour that the proxy module has to
// cope with. Every imitated Nexus behaviour is named in the doc comment of
// the option or function that turns it on.
//
// Start returns a Nexus with three registries: Hosted (read-write), Hub (a
// read-write member holding base images, standing in for a Docker Hub proxy
// repository) and Group (a read-only group of Hosted then Hub). Every server
// listens on 127.0.0.1 on a free port, records the requests it receives, and
// is stopped by Nexus.Close.
package standin
