#[derive(Debug)]
struct DbError;

#[palisade::protocol]
trait Chat {
    #[request("room.count")]
    async fn count(&mut self, room: String) -> Result<u32, DbError>;
}

fn main() {}
