fn main() {
    println!("session-engine");
}
