// Package actors holds the runtime's actors: one pool actor per configured
// pool (routing by free worker capacity, a bounded queue, supervision of its
// workers) and one worker actor per Python process (owning the process and its
// connection).
//
// No Receive here ever blocks: process starts, RPCs and shutdowns run in
// goroutines whose results come back as messages. Requests into a pool and
// their replies are the protobuf messages of package actors/pb.
package actors
